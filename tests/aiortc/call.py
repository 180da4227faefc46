"""Call the 12345 gateway the way an app does, with aiortc (an independent WebRTC stack):
a call token from POST /v1/call-tokens (API key, naming the app user), an offer of Opus and
PCMU (no PCMA, so the gateway must take PCMU), the answer, the microphone played from a WAV,
the gateway's audio measured, and a hang-up by DELETE after SECONDS. Prints one JSON object.

    python call.py BASE_URL API_KEY MIC.wav SECONDS

Run by tests/tests/calls/call_webrtc.rs from a virtualenv with aiortc 1.16 (PyPI).
"""
import array
import asyncio
import json
import math
import sys
import urllib.request

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def main(base, key, wav, seconds):
    out = {"connected": False, "codec": None, "frames": 0, "voiced": 0, "error": None}
    status, _, body = request(
        "POST", base + "/v1/call-tokens", json.dumps({"user": "app-user-7"}).encode(),
        {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    if status != 201:
        out["error"] = "token: %s %s" % (status, body[:200])
        return out
    token = json.loads(body)["token"]

    pc = RTCPeerConnection()
    player = MediaPlayer(wav)
    transceiver = pc.addTransceiver(player.audio, direction="sendrecv")
    caps = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences(
        [c for c in caps if c.mimeType.lower() in ("audio/opus", "audio/pcmu")])

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            samples = array.array("h", bytes(frame.planes[0]))
            if not samples:
                continue
            rms = math.sqrt(sum(s * s for s in samples) / len(samples))
            out["frames"] += 1
            if rms > 300:
                out["voiced"] += 1

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            out["connected"] = True

    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = request(
        "POST", base + "/v1/calls/webrtc", pc.localDescription.sdp.encode(),
        {"Authorization": "Bearer " + token, "Content-Type": "application/sdp"})
    if status != 201:
        out["error"] = "offer: %s %s" % (status, body[:300])
        await pc.close()
        return out
    location = headers.get("Location") or headers.get("location")
    answer = body.decode()
    for line in answer.splitlines():
        if line.startswith("a=rtpmap:") and "telephone-event" not in line:
            out["codec"] = line.split()[1].split("/")[0]
            break
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.sleep(seconds)
    status, _, _ = request("DELETE", base + location, None, {"Authorization": "Bearer " + token})
    out["hangup_status"] = status
    await pc.close()
    return out


if __name__ == "__main__":
    base, key, wav, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    print(json.dumps(asyncio.run(main(base, key, wav, seconds))))
