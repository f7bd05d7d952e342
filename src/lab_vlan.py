# VLAN probe for `levee lab` (this kernel may lack 802.1Q sub-interfaces, so tagged frames are
# written and read with raw packet sockets). Deterministic frames: the receiver rebuilds the
# list the sender sent and compares byte for byte.
#   python3 lab_vlan.py send IFACE DST_MAC COUNT
#   python3 lab_vlan.py recv IFACE COUNT TIMEOUT_S     -> prints "received N of COUNT identical"
# The kernel moves a received frame's outer tag into PACKET_AUXDATA (skb_vlan_untag runs before
# packet taps); the receiver puts it back in-band before comparing.
import socket, struct, sys, time

ETH_P_ALL = 3
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
SRC_MAC = bytes.fromhex("020000000101")


def frame(i, dst_mac):
    marker = b"levee-vlan-%06d" % i
    vid, pcp = 100 + (i % 3), i % 8
    tag = struct.pack("!HH", 0x8100, (pcp << 13) | vid)
    if i % 2 == 0:
        udp = struct.pack("!HHHH", 40000 + i, 9, 8 + len(marker), 0) + marker
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         bytes([198, 18, 1, 1]), bytes([198, 18, 1, 2]))
        csum = 0
        for k in range(0, 20, 2):
            csum += (ip[k] << 8) | ip[k + 1]
        while csum >> 16:
            csum = (csum & 0xFFFF) + (csum >> 16)
        ip = ip[:10] + struct.pack("!H", (~csum) & 0xFFFF) + ip[12:]
        body = struct.pack("!H", 0x0800) + ip + udp
    else:
        udp = struct.pack("!HHHH", 40000 + i, 9, 8 + len(marker), 0xFFFF) + marker
        src = bytes.fromhex("20010002000100000000000000000001")
        dst = bytes.fromhex("20010002000100000000000000000002")
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, src, dst)
        body = struct.pack("!H", 0x86DD) + ip + udp
    f = dst_mac + SRC_MAC + tag + body
    return f + b"\0" * max(0, 64 - len(f))


def send(iface, dst_mac, count):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for i in range(count):
        s.send(frame(i, dst_mac))
        time.sleep(0.001)


def recv(iface, count, timeout):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, 0))
    print("listening", flush=True)
    dst_mac = None
    got = {}
    end = time.time() + timeout
    while time.time() < end and len(got) < count:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data, anc, _, _ = s.recvmsg(65535, socket.CMSG_SPACE(64))
        except socket.timeout:
            break
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= 20:
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", cdata[:20])
                if status & TP_STATUS_VLAN_VALID:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        k = data.find(b"levee-vlan-")
        if k < 0:
            continue
        i = int(data[k + 11:k + 17])
        dst_mac = data[:6]
        got[i] = data
    same = sum(1 for i, d in got.items() if d == frame(i, dst_mac))
    print("received %d of %d identical" % (same, count), flush=True)
    for i, d in sorted(got.items()):
        if d != frame(i, dst_mac):
            print("frame %d differs: got %s want %s" % (i, d.hex(), frame(i, dst_mac).hex()), flush=True)
            break


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", "")), int(sys.argv[4]))
    else:
        recv(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
