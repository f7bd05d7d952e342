//! The verifier: nothing unverified is ever evaluated or published.
//!
//! It refuses a program when any rule reads a register no earlier instruction of the same rule
//! wrote (registers do not carry over between rules), uses a register range beyond the 64-byte
//! register file, loads or writes beyond the packet buffer model (64 KiB from its base),
//! references a set, counter, limit or quota that does not exist or with the wrong key or value
//! length, puts anything after a terminal instruction, jumps or goes to a chain that does not
//! exist or to a base chain, or when the jump graph (including verdict-map targets) has a
//! cycle or nests deeper than the 16-entry call stack.

use crate::sets::decode_verdict;
use crate::sets::{Set, SetId};
use crate::vm::{
    BitOp, CtKey, Insn, Operand, Program, Rule, Verdict, MAX_CALL_DEPTH, MAX_DATA_LEN, REG_BYTES,
};

/// Largest key a lookup or meter takes (a concatenation of up to 64 register bytes).
pub const MAX_KEY_LEN: usize = REG_BYTES;
/// Packet buffer model: offsets from any base stay below this.
pub const MAX_PACKET: usize = 65_535;

/// Where and why a program was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("chain {chain} rule {rule} instruction {insn}: {problem}")]
    Insn {
        chain: String,
        rule: usize,
        insn: usize,
        problem: String,
    },
    #[error("chain {chain}: {problem}")]
    Chain { chain: String, problem: String },
    #[error("jump loop: {0}")]
    Loop(String),
    #[error("chains nest {depth} deep through {path}; the call stack holds {max}")]
    TooDeep { depth: usize, path: String, max: usize },
}

/// What a rule's instructions may refer to: the program around it.
pub trait Env {
    /// Set `id`, if it exists.
    fn set(&self, id: SetId) -> Option<&Set>;
    /// Chain `id`: its name and whether it is a base chain, if it exists.
    fn chain(&self, id: u16) -> Option<(&str, bool)>;
    /// Number of counters, limits, quotas and log prefixes.
    fn counts(&self) -> (u32, u32, u32, usize);
}

impl Env for Program {
    fn set(&self, id: SetId) -> Option<&Set> {
        self.sets.get(id)
    }
    fn chain(&self, id: u16) -> Option<(&str, bool)> {
        self.chains
            .get(id as usize)
            .map(|c| (c.name.as_str(), c.policy.is_some()))
    }
    fn counts(&self) -> (u32, u32, u32, usize) {
        (self.counters, self.limits, self.quotas, self.log_prefixes.len())
    }
}

/// Checks `p`; `Ok` means it is safe to evaluate.
pub fn verify(p: &Program) -> Result<(), VerifyError> {
    let mut edges: Vec<Vec<(usize, bool)>> = vec![Vec::new(); p.chains.len()];
    for (ci, chain) in p.chains.iter().enumerate() {
        for (ri, rule) in chain.rules.iter().enumerate() {
            edges[ci].extend(verify_rule(p, &chain.name, ri, rule)?);
        }
    }
    verify_graph(&edges, |c| {
        p.chains.get(c).map(|c| c.name.as_str()).unwrap_or("?")
    })
}

/// Checks one rule (rule `ri` of chain `chain`, for error messages) against what `env`
/// holds; returns the chain edges it adds: (target chain, is a jump) for its jump and goto
/// verdicts and the targets of the verdict maps it looks up. The incremental compiler runs
/// this once per new rule, and [`verify_graph`] over every chain's edges once per generation.
pub fn verify_rule(
    env: &impl Env,
    chain: &str,
    ri: usize,
    rule: &Rule,
) -> Result<Vec<(usize, bool)>, VerifyError> {
    let mut edges = Vec::new();
    let (counters, limits, quotas, log_prefixes) = env.counts();
    {
        {
            let err = |insn: usize, problem: String| VerifyError::Insn {
                chain: chain.to_string(),
                rule: ri,
                insn,
                problem,
            };
            let mut written = [false; REG_BYTES];
            let mut terminal = false;
            for (ii, insn) in rule.insns.iter().enumerate() {
                if terminal {
                    return Err(err(ii, "instruction after a terminal verdict".into()));
                }
                let read = |reg: u8, len: usize, written: &[bool; REG_BYTES]| -> Result<(), VerifyError> {
                    let start = reg as usize * 4;
                    if len == 0 || start + len > REG_BYTES {
                        return Err(err(
                            ii,
                            format!("register {reg} with length {len} leaves the register file"),
                        ));
                    }
                    if written[start..start + len].iter().any(|w| !w) {
                        return Err(err(
                            ii,
                            format!("reads register {reg} ({len} bytes) before anything wrote it"),
                        ));
                    }
                    Ok(())
                };
                let write =
                    |reg: u8, len: usize, written: &mut [bool; REG_BYTES]| -> Result<(), VerifyError> {
                        let start = reg as usize * 4;
                        let padded = len.div_ceil(4) * 4;
                        if len == 0 || start + padded > REG_BYTES {
                            return Err(err(
                                ii,
                                format!("register {reg} with length {len} leaves the register file"),
                            ));
                        }
                        written[start..start + padded].fill(true);
                        Ok(())
                    };
                let data_len = |len: u8| -> Result<usize, VerifyError> {
                    if len == 0 || len as usize > MAX_DATA_LEN {
                        return Err(err(ii, format!("length {len} is not 1..={MAX_DATA_LEN}")));
                    }
                    Ok(len as usize)
                };
                match insn {
                    Insn::PayloadLoad {
                        offset, len, dreg, ..
                    } => {
                        let n = data_len(*len)?;
                        if *offset as usize + n > MAX_PACKET {
                            return Err(err(
                                ii,
                                format!("load at {offset}+{n} is beyond the packet model"),
                            ));
                        }
                        write(*dreg, n, &mut written)?;
                    }
                    Insn::PayloadWrite {
                        offset, len, sreg, ..
                    } => {
                        let n = data_len(*len)?;
                        if *offset as usize + n > MAX_PACKET {
                            return Err(err(
                                ii,
                                format!("write at {offset}+{n} is beyond the packet model"),
                            ));
                        }
                        read(*sreg, n, &written)?;
                    }
                    Insn::Cmp { sreg, len, rhs, .. } => {
                        let n = data_len(*len)?;
                        read(*sreg, n, &written)?;
                        if let Operand::Reg(r) = rhs {
                            read(*r, n, &written)?;
                        }
                    }
                    Insn::Bitwise { sreg, dreg, len, op } => {
                        let n = data_len(*len)?;
                        read(*sreg, n, &written)?;
                        if let BitOp::Shl(s) | BitOp::Shr(s) = op {
                            if *s >= 32 {
                                return Err(err(ii, format!("shift by {s} bits")));
                            }
                        }
                        write(*dreg, n, &mut written)?;
                    }
                    Insn::Byteorder {
                        sreg,
                        dreg,
                        len,
                        size,
                    } => {
                        let n = data_len(*len)?;
                        if !matches!(size, 2 | 4 | 8) || n % *size as usize != 0 {
                            return Err(err(ii, format!("byteorder size {size} over {n} bytes")));
                        }
                        read(*sreg, n, &written)?;
                        write(*dreg, n, &mut written)?;
                    }
                    Insn::Range { sreg, len, .. } => {
                        let n = data_len(*len)?;
                        read(*sreg, n, &written)?;
                    }
                    Insn::Immediate { dreg, len, .. } => {
                        let n = data_len(*len)?;
                        write(*dreg, n, &mut written)?;
                    }
                    Insn::Meta { key, dreg } => write(*dreg, key.data_len(), &mut written)?,
                    Insn::MetaSetMark { sreg } => read(*sreg, 4, &written)?,
                    Insn::Ct { key, dreg } => write(*dreg, key.data_len(), &mut written)?,
                    Insn::CtSet { key, sreg } => match key {
                        CtKey::Mark | CtKey::Label => read(*sreg, key.data_len(), &written)?,
                        other => return Err(err(ii, format!("ct {other:?} cannot be set"))),
                    },
                    Insn::Lookup {
                        set,
                        sreg,
                        len,
                        dreg,
                        verdict_map,
                        ..
                    } => {
                        let s = env
                            .set(*set)
                            .ok_or_else(|| err(ii, format!("no set {}", set.0)))?;
                        let n = *len as usize;
                        if n != s.key_len || n == 0 || n > MAX_KEY_LEN {
                            return Err(err(
                                ii,
                                format!("key of {n} bytes for set {} with {}-byte keys", s.name, s.key_len),
                            ));
                        }
                        read(*sreg, n, &written)?;
                        if *verdict_map != s.verdict_map {
                            return Err(err(ii, format!("verdict-map lookup mismatch on {}", s.name)));
                        }
                        if let Some(d) = dreg {
                            if s.data_len == 0 || s.verdict_map {
                                return Err(err(ii, format!("{} is not a data map", s.name)));
                            }
                            write(*d, s.data_len, &mut written)?;
                        }
                    }
                    Insn::Dynset { set, sreg, len, .. } => {
                        let s = env
                            .set(*set)
                            .ok_or_else(|| err(ii, format!("no set {}", set.0)))?;
                        if *len as usize != s.key_len {
                            return Err(err(
                                ii,
                                format!(
                                    "key of {len} bytes for set {} with {}-byte keys",
                                    s.name, s.key_len
                                ),
                            ));
                        }
                        read(*sreg, *len as usize, &written)?;
                    }
                    Insn::Counter { id } => {
                        if *id >= counters {
                            return Err(err(ii, format!("counter {id} of {counters}")));
                        }
                    }
                    Insn::Limit { id, rate, per_ns, .. } => {
                        if *id >= limits || *rate == 0 || *per_ns == 0 {
                            return Err(err(
                                ii,
                                format!("limit {id} of {limits} with rate {rate}/{per_ns}ns"),
                            ));
                        }
                    }
                    Insn::Quota { id, .. } => {
                        if *id >= quotas {
                            return Err(err(ii, format!("quota {id} of {quotas}")));
                        }
                    }
                    Insn::Log { prefix } => {
                        if *prefix as usize >= log_prefixes {
                            return Err(err(ii, format!("log prefix {prefix} does not exist")));
                        }
                    }
                    Insn::Notrack => {}
                    Insn::Reject(_) | Insn::Synproxy { .. } => terminal = true,
                    Insn::Verdict(v) => {
                        terminal = true;
                        if let Verdict::Jump(t) | Verdict::Goto(t) = v {
                            check_target(env, *t, &err(ii, String::new()))?;
                            edges.push((*t as usize, matches!(v, Verdict::Jump(_))));
                        }
                    }
                }
                // Verdict-map targets are edges too.
                if let Insn::Lookup {
                    set,
                    verdict_map: true,
                    ..
                } = insn
                {
                    if let Some(s) = env.set(*set) {
                        for v in vmap_targets(s) {
                            if let Verdict::Jump(t) | Verdict::Goto(t) = v {
                                check_target(env, t, &err(ii, String::new()))?;
                                edges.push((t as usize, matches!(v, Verdict::Jump(_))));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(edges)
}

/// Checks the jump graph: no cycle (a jump or goto back into a chain on the way) and no
/// path nesting deeper than the call stack. `edges[c]` are chain `c`'s edges as
/// [`verify_rule`] returns them.
pub fn verify_graph<'a>(
    edges: &[Vec<(usize, bool)>],
    name: impl Fn(usize) -> &'a str,
) -> Result<(), VerifyError> {
    // Cycles and depth: DFS from every chain; depth counts jumps (goto replaces the frame).
    let n = edges.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut deepest = vec![0usize; n];
    fn dfs<'a>(
        c: usize,
        edges: &[Vec<(usize, bool)>],
        state: &mut [u8],
        deepest: &mut [usize],
        path: &mut Vec<usize>,
        name: &impl Fn(usize) -> &'a str,
    ) -> Result<(), VerifyError> {
        state[c] = 1;
        path.push(c);
        let mut best = 0;
        for &(t, is_jump) in &edges[c] {
            if t >= edges.len() {
                return Err(VerifyError::Chain {
                    chain: name(c).to_string(),
                    problem: format!("jump to chain {t}, which does not exist"),
                });
            }
            match state[t] {
                1 => {
                    let start = path.iter().position(|&x| x == t).unwrap_or(0);
                    let names: Vec<&str> = path[start..].iter().chain([&t]).map(|&i| name(i)).collect();
                    return Err(VerifyError::Loop(names.join(" -> ")));
                }
                0 => dfs(t, edges, state, deepest, path, name)?,
                _ => {}
            }
            best = best.max(deepest[t] + is_jump as usize);
        }
        deepest[c] = best;
        path.pop();
        state[c] = 2;
        Ok(())
    }
    for c in 0..n {
        if state[c] == 0 {
            dfs(c, edges, &mut state, &mut deepest, &mut Vec::new(), &name)?;
        }
        if deepest[c] > MAX_CALL_DEPTH {
            return Err(VerifyError::TooDeep {
                depth: deepest[c],
                path: name(c).to_string(),
                max: MAX_CALL_DEPTH,
            });
        }
    }
    Ok(())
}

fn check_target(env: &impl Env, t: u16, at: &VerifyError) -> Result<(), VerifyError> {
    let VerifyError::Insn {
        chain, rule, insn, ..
    } = at
    else {
        unreachable!("callers pass Insn errors")
    };
    let e = |problem: String| VerifyError::Insn {
        chain: chain.clone(),
        rule: *rule,
        insn: *insn,
        problem,
    };
    match env.chain(t) {
        None => Err(e(format!("jump to chain {t}, which does not exist"))),
        Some((name, true)) => Err(e(format!("jump to base chain {name}"))),
        Some(_) => Ok(()),
    }
}

fn vmap_targets(s: &crate::sets::Set) -> Vec<Verdict> {
    s.values().filter_map(decode_verdict).collect()
}
