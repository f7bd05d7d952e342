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
use crate::vm::{BitOp, CtKey, Insn, Operand, Program, Verdict, MAX_CALL_DEPTH, MAX_DATA_LEN, REG_BYTES};

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

/// Checks `p`; `Ok` means it is safe to evaluate.
pub fn verify(p: &Program) -> Result<(), VerifyError> {
    let mut edges: Vec<Vec<(usize, bool)>> = vec![Vec::new(); p.chains.len()];
    for (ci, chain) in p.chains.iter().enumerate() {
        for (ri, rule) in chain.rules.iter().enumerate() {
            let err = |insn: usize, problem: String| VerifyError::Insn {
                chain: chain.name.clone(),
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
                        let s = p
                            .sets
                            .get(*set)
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
                        let s = p
                            .sets
                            .get(*set)
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
                        if *id >= p.counters {
                            return Err(err(ii, format!("counter {id} of {}", p.counters)));
                        }
                    }
                    Insn::Limit { id, rate, per_ns, .. } => {
                        if *id >= p.limits || *rate == 0 || *per_ns == 0 {
                            return Err(err(
                                ii,
                                format!("limit {id} of {} with rate {rate}/{per_ns}ns", p.limits),
                            ));
                        }
                    }
                    Insn::Quota { id, .. } => {
                        if *id >= p.quotas {
                            return Err(err(ii, format!("quota {id} of {}", p.quotas)));
                        }
                    }
                    Insn::Log { prefix } => {
                        if *prefix as usize >= p.log_prefixes.len() {
                            return Err(err(ii, format!("log prefix {prefix} does not exist")));
                        }
                    }
                    Insn::Notrack => {}
                    Insn::Reject(_) | Insn::Synproxy { .. } => terminal = true,
                    Insn::Verdict(v) => {
                        terminal = true;
                        if let Verdict::Jump(t) | Verdict::Goto(t) = v {
                            check_target(p, *t, &err(ii, String::new()))?;
                            edges[ci].push((*t as usize, matches!(v, Verdict::Jump(_))));
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
                    if let Some(s) = p.sets.get(*set) {
                        for v in vmap_targets(s) {
                            if let Verdict::Jump(t) | Verdict::Goto(t) = v {
                                check_target(p, t, &err(ii, String::new()))?;
                                edges[ci].push((t as usize, matches!(v, Verdict::Jump(_))));
                            }
                        }
                    }
                }
            }
        }
    }
    // Cycles and depth: DFS from every chain; depth counts jumps (goto replaces the frame).
    let n = p.chains.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut deepest = vec![0usize; n];
    fn dfs(
        c: usize,
        edges: &[Vec<(usize, bool)>],
        state: &mut [u8],
        deepest: &mut [usize],
        path: &mut Vec<usize>,
        p: &Program,
    ) -> Result<(), VerifyError> {
        state[c] = 1;
        path.push(c);
        let mut best = 0;
        for &(t, is_jump) in &edges[c] {
            match state[t] {
                1 => {
                    let start = path.iter().position(|&x| x == t).unwrap_or(0);
                    let names: Vec<&str> = path[start..]
                        .iter()
                        .chain([&t])
                        .map(|&i| p.chains[i].name.as_str())
                        .collect();
                    return Err(VerifyError::Loop(names.join(" -> ")));
                }
                0 => dfs(t, edges, state, deepest, path, p)?,
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
            dfs(c, &edges, &mut state, &mut deepest, &mut Vec::new(), p)?;
        }
        if deepest[c] > MAX_CALL_DEPTH {
            return Err(VerifyError::TooDeep {
                depth: deepest[c],
                path: p.chains[c].name.clone(),
                max: MAX_CALL_DEPTH,
            });
        }
    }
    Ok(())
}

fn check_target(p: &Program, t: u16, at: &VerifyError) -> Result<(), VerifyError> {
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
    match p.chains.get(t as usize) {
        None => Err(e(format!("jump to chain {t}, which does not exist"))),
        Some(c) if c.policy.is_some() => Err(e(format!("jump to base chain {}", c.name))),
        Some(_) => Ok(()),
    }
}

fn vmap_targets(s: &crate::sets::Set) -> Vec<Verdict> {
    s.values().filter_map(decode_verdict).collect()
}
