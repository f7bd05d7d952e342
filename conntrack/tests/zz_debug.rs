mod common;
use common::*;
#[test]
fn dbg37() {
    let sc = &random_tcp(0x5eed_0000, 0, 60, 40)[37];
    let mut sh = shard(false);
    for (i, s) in sc.steps.iter().enumerate() {
        let g = replay(&mut sh, std::slice::from_ref(s), 1_000_000_000 + i as u64 * 1_000_000)[0];
        let st = sh.iter(&levee_conntrack::DumpFilter::default(), 1_000_000_000 + i as u64 * 1_000_000).map(|e| format!("{:?} {:#x}", e.l4, e.status)).collect::<Vec<_>>();
        let d = match &s.l4 { L4::Tcp{flags,seq,ack,win,len,opts,..} => format!("flags={flags:#04x} seq={seq} ack={ack} win={win} len={len} opts={opts:?}"), L4::Icmp{msg_type,..} => format!("icmp {msg_type}"), _ => String::new() };
        eprintln!("#{i} {:?} {d} -> {g:?} {st:?}", s.side);
    }
}
