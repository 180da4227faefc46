#!/usr/bin/env python3
"""Outbound setup rate (issue #14): how many calls a second the gateway places through its trunk.

Starts a gateway (like call-load --spawn: free loopback ports, a temporary data dir, GATEWAY__*
overrides) whose `[calls.outbound] trunk` is this script, a UAS on one UDP socket that answers
every INVITE at once with 200 and an SDP naming one shared RTP socket, takes the ACK and answers
the BYE. Then it POSTs --calls calls to /v1/calls (one keep-alive connection, as fast as the
gateway answers), each to a different number, with a flow that plays a prompt and hangs up
(benches/flows/queue-load/notice.yaml), and measures:

  * setups a second: calls ACKed (answered and confirmed) over the time from the first POST to
    the last ACK, and the steady rate between the 10th and the last INVITE;
  * POST -> INVITE: from sending a call's POST to its INVITE reaching the trunk (kernel stamp);
  * INVITE -> ACK: our 200 is sent at once, so this is the gateway's turnaround;
  * the RTP the gateway sends (all calls to one socket, told apart by SSRC): late packets, with
    lateness defined as in call-load (benches/src/call/rtp.rs `Receiver`: against the packet with
    the smallest arrival - timestamp so far, a marker bit or an SSRC starting a new reference),
    arrival taken from the kernel's SO_TIMESTAMPNS stamp, and loss from sequence numbers;
  * the gateway's CPU (/proc/PID/stat) and this script's own.

    benches/outbound-setup.py --gateway target/release/gateway --calls 500 --cps 200

Python standard library only. Ends with a `SUMMARY key=value ...` line for benches/report.sh.
"""

import argparse
import http.client
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def proc_cpu(pid):
    """utime + stime of a process in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port():
    """A loopback port free for UDP and TCP (the gateway listens for SIP on both)."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


class Uas:
    """Answers the gateway's INVITEs 200 at once; records when INVITE, ACK and BYE came."""

    def __init__(self):
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for s in (self.sip, self.rtp):
            try:  # as root: past net.core.rmem_max
                s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.invite = {}  # number -> first INVITE arrival (ns)
        self.ack = {}  # number -> ACK arrival
        self.bye = {}
        self.by_call_id = {}  # Call-ID -> number
        self.answers = {}  # Call-ID -> our 200 (for retransmitted INVITEs)
        self.invite_retransmits = 0
        self.other = {}
        # RTP: ssrc -> [anchor_us, last_ts, ts_raw, base_seq, max_seq, last_seq, received]
        self.streams = {}
        self.rtp_packets = 0
        self.measured = 0
        self.late = 0
        self.late_max_us = 0
        self.anchors = 0
        self.late_us = 5000
        self.stop = False

    def run(self):
        socks = [self.sip, self.rtp]
        while not self.stop:
            ready, _, _ = select.select(socks, [], [], 0.1)
            for s in ready:
                # Drain the socket.
                while True:
                    try:
                        data, anc, _, addr = s.recvmsg(4096, 64, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    stamp = now_ns()
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", value[:16])
                            stamp = sec * 1_000_000_000 + nsec
                    if s is self.sip:
                        self.on_sip(data, addr, stamp)
                    else:
                        self.on_rtp(data, stamp)

    def on_sip(self, data, addr, stamp):
        text = data.decode("utf-8", "replace")
        head, _, _ = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        start = lines[0].split(" ")
        if start[0].startswith("SIP/"):
            return  # a response (to nothing we sent)
        method, uri = start[0], start[1]
        vias, hdr = [], {}
        compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact"}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = compact.get(name.strip().lower(), name.strip().lower())
            value = value.strip()
            if name == "via":
                vias.append(value)
            else:
                hdr.setdefault(name, value)
        call_id = hdr.get("call-id", "")
        m = re.match(r"sips?:([^@;>]+)@", uri)
        number = m.group(1) if m else uri

        def reply(status, reason, extra="", body=""):
            to = hdr.get("to", "")
            if status == 200 and method == "INVITE" and "tag=" not in to:
                to += ";tag=uas" + str(abs(hash(call_id)) % 10**8)
            msg = f"SIP/2.0 {status} {reason}\r\n"
            msg += "".join(f"Via: {v}\r\n" for v in vias)
            msg += f"From: {hdr.get('from', '')}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            msg += f"CSeq: {hdr.get('cseq', '')}\r\n{extra}"
            msg += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
            return msg.encode()

        if method == "INVITE":
            if call_id in self.answers:
                self.invite_retransmits += 1
                self.sip.sendto(self.answers[call_id], addr)
                return
            self.invite.setdefault(number, stamp)
            self.by_call_id[call_id] = number
            sdp = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
            )
            extra = (
                f"Contact: <sip:uas@127.0.0.1:{self.port}>\r\n"
                "Content-Type: application/sdp\r\n"
            )
            ok = reply(200, "OK", extra, sdp)
            self.answers[call_id] = ok
            self.sip.sendto(ok, addr)
        elif method == "ACK":
            n = self.by_call_id.get(call_id)
            if n is not None:
                self.ack.setdefault(n, stamp)
        elif method == "BYE":
            n = self.by_call_id.get(call_id)
            if n is not None:
                self.bye.setdefault(n, stamp)
            self.sip.sendto(reply(200, "OK"), addr)
        else:
            self.other[method] = self.other.get(method, 0) + 1
            if method != "CANCEL":
                self.sip.sendto(reply(200, "OK"), addr)

    def on_rtp(self, data, stamp):
        if len(data) < 12:
            return
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        pt, marker = b1 & 0x7F, bool(b1 & 0x80)
        self.rtp_packets += 1
        s = self.streams.get(ssrc)
        if s is None:
            s = [None, ts, ts, seq, seq - 1, (seq - 1) & 0xFFFF, 0]
            self.streams[ssrc] = s
        s[6] += 1
        ahead = (seq - s[5]) & 0xFFFF
        if ahead >= 0x8000:
            ahead -= 0x10000
        if ahead > 0:
            s[4] += ahead
            s[5] = seq
        if pt == 101:
            return
        d = (ts - s[2]) & 0xFFFFFFFF
        if d >= 0x80000000:
            d -= 0x100000000
        s[1] += d
        s[2] = ts
        offset = stamp // 1000 - s[1] * 125
        anchor = s[0]
        if anchor is not None and not marker and abs(offset - anchor) <= 1_000_000:
            self.measured += 1
            if offset < anchor:
                s[0] = offset
            else:
                late = offset - anchor
                if late > self.late_us:
                    self.late += 1
                self.late_max_us = max(self.late_max_us, late)
        else:
            self.anchors += 1
            s[0] = offset

    def lost(self):
        return sum(max(0, (s[4] - s[3] + 1) - s[6]) for s in self.streams.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway", default="target/release/gateway")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--cps", type=int, default=200, help="calls.outbound.calls_per_second")
    ap.add_argument("--max-calls", type=int, default=500, help="calls.outbound.max_calls")
    ap.add_argument("--flows-dir", default="benches/flows/queue-load")
    ap.add_argument("--flow", default="notice")
    ap.add_argument("--gateway-rtp-ports", default="40000-59999")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after this many s")
    ap.add_argument("--gateway-env", action="append", default=[], help="KEY=VALUE, repeatable")
    args = ap.parse_args()

    uas = Uas()
    threading.Thread(target=uas.run, daemon=True).start()

    work = tempfile.TemporaryDirectory(prefix="outbound-setup-")
    data = os.path.join(work.name, "data")
    sip, http_port = free_port(), free_port()
    lo, hi = args.gateway_rtp_ports.split("-")
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env.update(
        {
            "GATEWAY__LOG__LEVEL": "warn",
            "GATEWAY__NODE__DATA_DIR": data,
            "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{http_port}",
            "GATEWAY__SIP__UDP": f"127.0.0.1:{sip}",
            "GATEWAY__SIP__TCP": f"127.0.0.1:{sip}",
            "GATEWAY__MEDIA__RTP_PORT_MIN": lo,
            "GATEWAY__MEDIA__RTP_PORT_MAX": hi,
            "GATEWAY__CALLS__MAX_CALLS": str(args.max_calls + 100),
            "GATEWAY__IVR__FLOWS_DIR": args.flows_dir,
            "GATEWAY__IVR__RELOAD": "false",
            "GATEWAY__CALLS__OUTBOUND__TRUNK": f"sip:127.0.0.1:{uas.port}",
            "GATEWAY__CALLS__OUTBOUND__CALLING_HOURS": "00:00-24:00",
            "GATEWAY__CALLS__OUTBOUND__MAX_CALLS": str(args.max_calls),
            "GATEWAY__CALLS__OUTBOUND__CALLS_PER_SECOND": str(args.cps),
        }
    )
    for kv in args.gateway_env:
        k, _, v = kv.partition("=")
        env[k] = v
    gw = subprocess.Popen([args.gateway, "run"], env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            if gw.poll() is not None:
                sys.exit(f"the gateway exited before it was ready: {gw.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("the gateway was not ready within 30 s")
            time.sleep(0.05)
        with open(os.path.join(data, "api-key")) as f:
            key = f.read().strip()
        print(
            f"spawned gateway pid {gw.pid}: SIP 127.0.0.1:{sip}, HTTP 127.0.0.1:{http_port}, "
            f"trunk sip:127.0.0.1:{uas.port}; outbound max_calls {args.max_calls}, "
            f"calls_per_second {args.cps}; {args.calls} calls to flow {args.flow!r}",
            flush=True,
        )
        numbers = [f"1390{i:07d}" for i in range(args.calls)]
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        gw_cpu0, own0 = proc_cpu(gw.pid), resource.getrusage(resource.RUSAGE_SELF)
        posted, statuses, post_ms = {}, {}, []
        for n in numbers:
            body = json.dumps({"to": n, "flow": args.flow, "vars": {}})
            t = now_ns()
            conn.request("POST", "/v1/calls", body, headers)
            r = conn.getresponse()
            r.read()
            posted[n] = t
            post_ms.append((now_ns() - t) / 1e6)
            statuses[r.status] = statuses.get(r.status, 0) + 1
        posts_done = now_ns()
        first = min(posted.values())
        print(
            f"POSTs: {args.calls} in {(posts_done - first) / 1e9:.2f} s, statuses {statuses}, "
            f"p50 {pct(post_ms, 50):.1f} ms, p99 {pct(post_ms, 99):.1f} ms",
            flush=True,
        )
        deadline = time.time() + args.timeout
        last_report = time.time()
        while time.time() < deadline and len(uas.bye) < args.calls:
            time.sleep(0.2)
            if time.time() - last_report >= 5:
                last_report = time.time()
                print(
                    f"  {(now_ns() - first) / 1e9:5.1f} s: INVITEs {len(uas.invite)}, "
                    f"ACKs {len(uas.ack)}, BYEs {len(uas.bye)}",
                    flush=True,
                )
        time.sleep(0.5)
        end = now_ns()
        gw_cpu = proc_cpu(gw.pid) - gw_cpu0
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        own_cpu = (own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)
        uas.stop = True
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(20)
        except subprocess.TimeoutExpired:
            gw.kill()

    inv = sorted(uas.invite.values())
    acks = sorted(uas.ack.values())
    window = (end - first) / 1e9
    setup_window = (acks[-1] - first) / 1e9 if acks else float("nan")
    setups = len(acks) / setup_window if acks else 0.0
    steady = (len(inv) - 10) / ((inv[-1] - inv[9]) / 1e9) if len(inv) > 20 else float("nan")
    def peak_window(stamps, width_ns):
        best, j = 0, 0
        for i, t in enumerate(stamps):
            while stamps[j] < t - width_ns:
                j += 1
            best = max(best, i - j + 1)
        return best

    peak_1s, peak_100ms = peak_window(inv, 10**9), peak_window(inv, 10**8)
    p2i = [(uas.invite[n] - posted[n]) / 1e6 for n in numbers if n in uas.invite]
    i2a = [(uas.ack[n] - uas.invite[n]) / 1e6 for n in numbers if n in uas.ack]
    late_pct = 100.0 * uas.late / uas.measured if uas.measured else 0.0
    print()
    print(f"calls              {args.calls} POSTed, {len(inv)} INVITEd, {len(acks)} ACKed, "
          f"{len(uas.bye)} hung up by the gateway; INVITE retransmits {uas.invite_retransmits}")
    print(f"setup rate         {setups:.1f} calls/s from the first POST to the last ACK "
          f"({setup_window:.2f} s); INVITEs from the 10th to the last {steady:.1f}/s; "
          f"most INVITEs in any 1 s {peak_1s}, in any 100 ms {peak_100ms}")
    print(f"POST -> INVITE     p50 {pct(p2i, 50):.1f} ms, p99 {pct(p2i, 99):.1f} ms, "
          f"max {max(p2i, default=float('nan')):.1f} ms")
    print(f"INVITE -> ACK      p50 {pct(i2a, 50):.2f} ms, p99 {pct(i2a, 99):.2f} ms")
    print(f"RTP                {uas.rtp_packets} packets from {len(uas.streams)} streams, "
          f"{uas.measured} timed, late > 5 ms {uas.late} ({late_pct:.3f}%), "
          f"max {uas.late_max_us / 1000:.2f} ms, lost {uas.lost()}")
    print(f"CPU                gateway {100 * gw_cpu / window:.0f}% of a core, "
          f"this script {100 * own_cpu / window:.0f}% over {window:.1f} s")
    print()
    print(
        f"SUMMARY calls={args.calls} invited={len(inv)} acked={len(acks)} "
        f"setups={setups:.1f}/s invite_rate={steady:.1f}/s peak_1s={peak_1s} peak_100ms={peak_100ms} "
        f"post_invite_p50={pct(p2i, 50):.1f}ms post_invite_p99={pct(p2i, 99):.1f}ms "
        f"invite_ack_p99={pct(i2a, 99):.2f}ms rtp={uas.measured} late>5ms={uas.late} "
        f"({late_pct:.3f}%) late_max={uas.late_max_us / 1000:.2f}ms lost={uas.lost()} "
        f"gateway_cpu={100 * gw_cpu / window:.0f}% generator_cpu={100 * own_cpu / window:.0f}%"
    )
    sys.exit(0 if len(acks) == args.calls else 1)


if __name__ == "__main__":
    main()
