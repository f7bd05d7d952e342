//! Random VM programs: decoded from the fuzzer's bytes, passed through the verifier, and — when
//! accepted — evaluated on a packet also taken from the input. Nothing may panic, and a
//! verified program must evaluate to accept or drop (never run off its registers or packet).
#![no_main]

use levee_filter_vm::ctx::{packet_ctx, HookKind};
use levee_filter_vm::sets::{encode_verdict, ElemSpec, Set, SetId, SetSpec};
use levee_filter_vm::verify::verify;
use levee_filter_vm::vm::*;
use levee_filter_vm::PacketMeta;
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn arr(&mut self) -> [u8; MAX_DATA_LEN] {
        let mut a = [0u8; MAX_DATA_LEN];
        for b in a.iter_mut() {
            *b = self.u8();
        }
        a
    }
}

fn insn(b: &mut Bytes<'_>, chains: u16) -> Insn {
    let reg = |b: &mut Bytes<'_>| b.u8() % 18; // a little beyond the 16 registers
    let len = |b: &mut Bytes<'_>| b.u8() % 20;
    match b.u8() % 18 {
        0 => Insn::PayloadLoad {
            base: [Base::Link, Base::Network, Base::Transport][b.u8() as usize % 3],
            offset: b.u16(),
            len: len(b),
            dreg: reg(b),
        },
        1 => Insn::Cmp {
            op: [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Lte, CmpOp::Gt, CmpOp::Gte][b.u8() as usize % 6],
            sreg: reg(b),
            len: len(b),
            rhs: if b.u8() % 2 == 0 { Operand::Imm(b.arr()) } else { Operand::Reg(reg(b)) },
        },
        2 => Insn::Bitwise {
            sreg: reg(b),
            dreg: reg(b),
            len: len(b),
            op: match b.u8() % 3 {
                0 => BitOp::MaskXor { mask: b.arr(), xor: b.arr() },
                1 => BitOp::Shl(b.u8() % 40),
                _ => BitOp::Shr(b.u8() % 40),
            },
        },
        3 => Insn::Byteorder { sreg: reg(b), dreg: reg(b), len: len(b), size: b.u8() % 10 },
        4 => Insn::Range { sreg: reg(b), len: len(b), from: b.arr(), to: b.arr(), negate: b.u8() % 2 == 0 },
        5 => Insn::Immediate { dreg: reg(b), len: len(b), data: b.arr() },
        6 => Insn::Meta {
            key: [MetaKey::Iif, MetaKey::IifName, MetaKey::Len, MetaKey::L4Proto, MetaKey::NfProto, MetaKey::Mark, MetaKey::TimeNs, MetaKey::Hour]
                [b.u8() as usize % 8],
            dreg: reg(b),
        },
        7 => Insn::MetaSetMark { sreg: reg(b) },
        8 => Insn::Ct { key: [CtKey::State, CtKey::Mark, CtKey::Label, CtKey::Zone][b.u8() as usize % 4], dreg: reg(b) },
        9 => Insn::Lookup { set: SetId(b.u8() as u32 % 3), sreg: reg(b), len: len(b), dreg: None, verdict_map: b.u8() % 2 == 0, invert: b.u8() % 2 == 0 },
        10 => Insn::Dynset {
            set: SetId(b.u8() as u32 % 3),
            sreg: reg(b),
            len: len(b),
            op: DynsetOp::Update,
            timeout_ns: b.u16() as u64,
            stmt: DynStmt::Limit { rate: 1 + b.u8() as u64, per_ns: 1_000_000_000, burst: b.u8() as u64, over: b.u8() % 2 == 0 },
        },
        11 => Insn::Counter { id: b.u8() as u32 % 6 },
        12 => Insn::Limit { id: b.u8() as u32 % 3, rate: b.u8() as u64, per_ns: b.u16() as u64, burst: b.u8() as u64, bytes: false, over: true },
        13 => Insn::Quota { id: b.u8() as u32 % 3, bytes: b.u16() as u64, over: b.u8() % 2 == 0 },
        14 => Insn::Reject(RejectKind::TcpReset),
        15 => Insn::Notrack,
        16 => Insn::Log { prefix: b.u8() as u32 % 3 },
        _ => Insn::Verdict(match b.u8() % 6 {
            0 => Verdict::Accept,
            1 => Verdict::Drop,
            2 => Verdict::Continue,
            3 => Verdict::Return,
            4 => Verdict::Jump(b.u16() % (chains + 1)),
            _ => Verdict::Goto(b.u16() % (chains + 1)),
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let nchains = 1 + (b.u8() % 4) as u16;
    let mut p = Program { counters: 4, limits: 2, quotas: 2, log_prefixes: vec!["x".into(), "y".into()].into(), ..Default::default() };
    let e = |k: &[u8]| ElemSpec { lo: k.to_vec(), hi: k.to_vec(), value: Vec::new(), timeout_ns: None };
    p.sets.push(Set::build(&SetSpec { name: "s".into(), key_len: 2, ..Default::default() }, &[e(&[0, 80])], 0).unwrap());
    let mut vm_elem = e(&[0, 22]);
    vm_elem.value = encode_verdict(Verdict::Jump(1 % nchains)).to_vec();
    p.sets.push(Set::build(&SetSpec { name: "v".into(), key_len: 2, data_len: 8, verdict_map: true, ..Default::default() }, &[vm_elem], 0).unwrap());
    p.sets.push(Set::build(&SetSpec { name: "m".into(), key_len: 4, size: Some(8), ..Default::default() }, &[], 0).unwrap());
    for c in 0..nchains {
        let nrules = b.u8() % 4;
        let rules = (0..nrules)
            .map(|_| {
                let n = b.u8() % 8;
                Rule { insns: (0..n).map(|_| insn(&mut b, nchains)).collect() }
            })
            .collect();
        p.chains.push(Chain { name: format!("c{c}"), rules, policy: (c == 0).then_some(Verdict::Accept) });
    }
    if verify(&p).is_err() {
        return;
    }
    let frame = b.0;
    let mut state = State::new(&p);
    // The lowered form workers run must agree with the reference interpreter.
    let exec = levee_filter_vm::exec::lower(&p);
    let mut fast = State::new(&p);
    for hook in [HookKind::Ingress, HookKind::Ip] {
        let ctx = packet_ctx(frame, &PacketMeta::default(), hook);
        let o = evaluate(&p, &mut state, 0, &ctx);
        assert!(matches!(o.verdict, Verdict::Accept | Verdict::Drop), "{o:?}");
        let f = levee_filter_vm::exec::evaluate(&exec, &p, &mut fast, 0, &ctx);
        assert_eq!(o, f, "lowered program differs");
        let c = |s: &State| s.counters.iter().map(|c| c.get()).collect::<Vec<_>>();
        assert_eq!(c(&state), c(&fast));
        assert_eq!(state.writes, fast.writes);
        assert_eq!(state.log_events, fast.log_events);
    }
});
