// splatcast bot page: a WebRTC call with `splatcast bot`, over Pipecat's SmallWebRTC signalling.
//
//   POST /start                           → {sessionId, iceConfig?}
//   POST /sessions/{sessionId}/api/offer  {sdp, type} → {sdp, type, pc_id}   (ICE gathered first: no trickle)
//
// Audio goes first (the microphone, sendrecv; SmallWebRTC takes the first transceiver as audio), video
// second (recvonly). Everything is served by the bot itself: no other site is contacted.
// For tests: window.splatcastBot = {state, pcId, framesDecoded, audioEnergy, width, height}.
"use strict";

(() => {
  const ICE_GATHER_TIMEOUT_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const el = {
    video: $("bot-video"), state: $("bot-state"), connect: $("bot-connect"), hangup: $("bot-disconnect"),
    mic: $("bot-mic"), error: $("bot-error"), stats: $("bot-stats"),
  };
  const status = { state: "disconnected", pcId: null, framesDecoded: 0, audioEnergy: 0, width: 0, height: 0 };
  window.splatcastBot = status;
  let call = null;

  function setState(state) {
    status.state = state;
    document.body.dataset.state = state;
    el.state.textContent = state;
    el.connect.disabled = state === "connecting" || state === "connected";
    el.hangup.disabled = state === "disconnected" || state === "failed";
  }

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = !message;
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${text.slice(0, 200)}`);
    return JSON.parse(text);
  }

  async function microphone() {
    if (!el.mic.checked || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return null;
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
    } catch (err) {
      showError(`No microphone (${err.name === "NotAllowedError" ? "permission denied" : err.message}); ` +
        "you will see and hear the avatar, but it cannot hear you.");
      return null;
    }
  }

  function iceGathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);  // an unreachable STUN server: send what we have
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function connect() {
    if (call) hangUp();
    showError("");
    setState("connecting");
    const current = { pc: null, mic: null, timer: null };
    call = current;
    try {
      const start = await post("/start", { transport: "webrtc" });
      current.mic = await microphone();
      const iceServers = (start.iceConfig && start.iceConfig.iceServers) || [];
      const pc = new RTCPeerConnection({ iceServers });
      current.pc = pc;
      const micTrack = current.mic ? current.mic.getAudioTracks()[0] : null;
      if (micTrack) pc.addTransceiver(micTrack, { direction: "sendrecv", streams: [current.mic] });
      else pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
      const remote = new MediaStream();
      el.video.srcObject = remote;
      pc.addEventListener("track", (event) => {
        remote.addTrack(event.track);
        el.video.play().catch((err) => console.warn("splatcast bot: play():", err.message));
      });
      pc.addEventListener("connectionstatechange", () => {
        if (call !== current) return;
        const state = pc.connectionState;
        if (state === "connected") setState("connected");
        else if (state === "failed") { showError("The connection failed."); hangUp("failed"); }
        else if (state === "closed") hangUp();
      });
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc);
      if (call !== current) return;
      const answer = await post(`/sessions/${encodeURIComponent(start.sessionId)}/api/offer`, {
        sdp: pc.localDescription.sdp,
        type: pc.localDescription.type,
      });
      status.pcId = answer.pc_id || null;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      current.timer = setInterval(() => readStats(current), 1000);
    } catch (err) {
      console.error("splatcast bot: connect failed", err);
      showError(`Could not start the call: ${err.message || err}`);
      hangUp("failed");
    }
  }

  async function readStats(current) {
    if (call !== current || !current.pc) return;
    const report = await current.pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        status.framesDecoded = s.framesDecoded || 0;
        status.width = s.frameWidth || 0;
        status.height = s.frameHeight || 0;
      } else if (s.kind === "audio") {
        status.audioEnergy = s.totalAudioEnergy || 0;
      }
    });
    el.stats.textContent = `${status.framesDecoded} frames (${status.width}×${status.height}), ` +
      `audio energy ${status.audioEnergy.toFixed(3)}`;
  }

  function hangUp(finalState) {
    const current = call;
    call = null;
    if (current) {
      clearInterval(current.timer);
      if (current.pc) current.pc.close();
      if (current.mic) current.mic.getTracks().forEach((t) => t.stop());
    }
    el.video.srcObject = null;
    setState(finalState || "disconnected");
  }

  el.connect.addEventListener("click", connect);
  el.hangup.addEventListener("click", () => hangUp());
  setState("disconnected");
})();
