// splatcast browser client: one WebRTC call with the avatar. Plain JS, no build step, no external files.
//
// Server API used (all same-origin):
//   GET  /api/config                        -> {ice_servers: [...]}   (strings or RTCIceServer objects)
//   POST /api/offer {sdp, type, avatar?}    -> {sdp, type, session_id, token?, avatar}  (non-trickle ICE;
//                                              avatar: the library id picked in avatars.js)
//   POST /api/sessions/{id}/say {text}      -> 202
//   POST /api/sessions/{id}/interrupt
//   POST /api/sessions/{id}/emotion {name, intensity}   (name "auto": each sentence's own emotion)
//   DELETE /api/sessions/{id}               (also on page unload, fetch keepalive)
//   WS   /api/sessions/{id}/events[?token=] -> {"type": "state"|"transcript"|"stats"|"error", ...}
// Session routes carry "Authorization: Bearer <token>" when the offer answer had a token; browsers cannot
// set headers on a WebSocket, so the events socket gets the token as the ?token= query parameter.
//
// Hooks for headless tests:
//   window.splatcastState  'disconnected' | 'connecting' | 'connected' | 'failed'  (also <body data-state>)
//   window.splatcastStats  {fps, framesDropped, framesDecoded, jitter (ms), rtt (ms), audioLevel,
//                           packetsLost, width, height, timestamp}, refreshed every second from getStats();
//                           the same numbers sit in #stats-fps, #stats-dropped, #stats-decoded,
//                           #stats-jitter, #stats-rtt and in data-* attributes of #stats.
//   window.splatcastSession {id, conversationState}
"use strict";

(() => {
  const ICE_GATHER_TIMEOUT_MS = 4000;
  const STATS_PERIOD_MS = 1000;
  const EMOTION_DEBOUNCE_MS = 150;

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    video: $("avatar-video"),
    connState: $("conn-state"),
    stageHint: $("stage-hint"),
    convState: $("conv-state"),
    connect: $("connect"),
    stageConnect: $("stage-connect"),
    mic: $("mic"),
    micLabel: $("mic-label"),
    interrupt: $("interrupt"),
    emotion: $("emotion"),
    intensity: $("intensity"),
    sayForm: $("say-form"),
    sayText: $("say-text"),
    sayButton: $("say-button"),
    transcript: $("transcript"),
    transcriptEmpty: $("transcript-empty"),
    error: $("error"),
    errorText: $("error-text"),
    errorClose: $("error-close"),
    reconnect: $("reconnect"),
    stats: $("stats"),
    statsToggle: $("stats-toggle"),
    statsBody: $("stats-body"),
    statsFps: $("stats-fps"),
    statsDropped: $("stats-dropped"),
    statsDecoded: $("stats-decoded"),
    statsJitter: $("stats-jitter"),
    statsRtt: $("stats-rtt"),
    statsAudio: $("stats-audio"),
    statsSize: $("stats-size"),
    statsServer: $("stats-server"),
  };

  const STATE_LABELS = {
    disconnected: "Disconnected",
    connecting: "Connecting…",
    connected: "Connected",
    failed: "Connection failed",
  };

  // everything that belongs to one call; replaced on every connect
  let call = null;
  let micWanted = true; // the user's mic preference, kept across calls
  let emotionTimer = null;

  window.splatcastState = "disconnected";
  window.splatcastStats = emptyStats();
  window.splatcastSession = null;

  function emptyStats() {
    return {
      fps: null, framesDropped: null, framesDecoded: null, jitter: null, rtt: null,
      audioLevel: null, packetsLost: null, width: null, height: null, timestamp: null,
    };
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.name = "ApiError";
      this.status = status;
    }
  }

  // ------------------------------------------------------------------ UI state

  function setState(state, hint) {
    window.splatcastState = state;
    el.body.dataset.state = state;
    el.connState.textContent = STATE_LABELS[state] || state;
    const live = state === "connected";
    const busy = state === "connecting";
    el.connect.textContent = live || busy ? "Disconnect" : "Connect";
    el.connect.classList.toggle("is-live", live || busy);
    for (const control of [el.interrupt, el.emotion, el.intensity, el.sayText, el.sayButton]) {
      control.disabled = !live;
    }
    if (hint) {
      el.stageHint.textContent = hint;
    } else if (state === "disconnected") {
      el.stageHint.textContent = "Press Connect to start a video call. Your microphone is used only if you allow it.";
    } else if (busy) {
      el.stageHint.textContent = "Setting up the call…";
    }
    updateMicButton();
  }

  function setConversationState(state) {
    el.convState.textContent = state;
    el.convState.dataset.convState = state;
    if (window.splatcastSession) window.splatcastSession.conversationState = state;
  }

  function showError(message) {
    el.errorText.textContent = message;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.hidden = true;
    el.errorText.textContent = "";
  }

  function updateMicButton() {
    const track = call && call.micTrack;
    let on;
    if (track) {
      on = track.enabled;
      el.mic.disabled = false;
      el.mic.title = "Microphone on/off";
    } else if (call && call.micError && window.splatcastState === "connected") {
      on = false;
      el.mic.disabled = true;
      el.mic.title = "No microphone: " + call.micError;
    } else {
      on = micWanted;
      el.mic.disabled = false;
      el.mic.title = "Use the microphone in the next call";
    }
    el.mic.setAttribute("aria-pressed", String(on));
    el.micLabel.textContent = el.mic.disabled ? "No mic" : on ? "Mic on" : "Mic off";
  }

  // ------------------------------------------------------------------ HTTP

  async function readError(response) {
    let detail = "";
    try {
      const text = await response.text();
      try {
        const body = JSON.parse(text);
        detail = body.message || body.error || body.detail || text;
        if (typeof detail !== "string") detail = JSON.stringify(detail);
      } catch {
        detail = text;
      }
    } catch {
      detail = "";
    }
    detail = detail.trim().slice(0, 300);
    const retry = response.headers.get("Retry-After");
    let message = `${response.status} ${response.statusText || "error"}` + (detail ? `: ${detail}` : "");
    if (response.status === 503 && retry) message += ` (the server is full; try again in ${retry} s)`;
    return new ApiError(message, response.status);
  }

  // A server started with --token needs it on /api/config and /api/offer: open the page as /?token=...
  const serverToken = new URLSearchParams(location.search).get("token");

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const token = (call && call.token) || serverToken;
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async function api(method, path, body) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: authHeaders(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(`cannot reach the server (${err.message || err})`, 0);
    }
    if (!response.ok) throw await readError(response);
    const type = response.headers.get("Content-Type") || "";
    return type.includes("application/json") ? response.json() : null;
  }

  function sessionPath(suffix) {
    return `/api/sessions/${encodeURIComponent(call.sessionId)}${suffix || ""}`;
  }

  async function sessionCall(suffix, body, what) {
    if (!call || !call.sessionId) return;
    try {
      await api("POST", sessionPath(suffix), body);
    } catch (err) {
      showError(`${what} failed: ${err.message}`);
    }
  }

  async function iceServers() {
    try {
      const config = await api("GET", "/api/config");
      const list = (config && config.ice_servers) || [];
      return list.map((s) => (typeof s === "string" ? { urls: s } : s)).filter((s) => s && s.urls);
    } catch (err) {
      console.warn("splatcast: /api/config unavailable, using no ICE servers:", err.message);
      return [];
    }
  }

  // ------------------------------------------------------------------ the call

  async function getMic() {
    if (!micWanted) return { track: null, stream: null, error: "turned off" };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return { track: null, stream: null, error: "not available on this page (needs https or localhost)" };
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
      return { track: stream.getAudioTracks()[0] || null, stream, error: null };
    } catch (err) {
      return { track: null, stream: null, error: err.name === "NotAllowedError" ? "permission denied" : err.message };
    }
  }

  function waitForIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      // an unreachable STUN server can hold gathering for a long time: send what we have
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function connect() {
    if (call) await disconnect();
    clearError();
    clearTranscript();
    setState("connecting");
    const current = {
      pc: null, ws: null, sessionId: null, token: null, micTrack: null, micStream: null, micError: null,
      statsTimer: null, lastVideo: null, closed: false,
    };
    call = current;
    try {
      const [servers, mic] = await Promise.all([iceServers(), getMic()]);
      if (current.closed) return;
      current.micTrack = mic.track;
      current.micStream = mic.stream;
      current.micError = mic.error;

      const pc = new RTCPeerConnection({ iceServers: servers });
      current.pc = pc;
      if (mic.track) {
        pc.addTransceiver(mic.track, { direction: "sendrecv", streams: [mic.stream] });
      } else {
        pc.addTransceiver("audio", { direction: "recvonly" });
      }
      pc.addTransceiver("video", { direction: "recvonly" });

      const remote = new MediaStream();
      el.video.srcObject = remote;
      pc.addEventListener("track", (event) => {
        remote.addTrack(event.track);
        // the Connect click is the user gesture that lets the avatar's audio play
        el.video.play().catch((err) => console.warn("splatcast: video.play():", err.message));
      });
      pc.addEventListener("connectionstatechange", () => onConnectionState(current));
      pc.addEventListener("iceconnectionstatechange", () => {
        if (pc.iceConnectionState === "failed") onConnectionState(current, "failed");
      });

      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (current.closed) return;
      const offer = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
      if (window.SplatcastAvatars) offer.avatar = window.SplatcastAvatars.selected();
      const answer = await api("POST", "/api/offer", offer);
      if (current.closed) return;
      if (!answer || !answer.sdp || !answer.session_id) {
        throw new ApiError("the server's answer has no sdp or session_id", 0);
      }
      current.sessionId = String(answer.session_id);
      current.token = answer.token || null;
      window.splatcastSession = { id: current.sessionId, conversationState: "idle" };
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type || "answer" });
      openEvents(current);
      current.statsTimer = setInterval(() => pollStats(current), STATS_PERIOD_MS);
      updateMicButton();
    } catch (err) {
      if (current.closed) return;
      console.error("splatcast: connect failed", err);
      fail(current, err instanceof ApiError ? `Could not start the call: ${err.message}` : `Could not start the call: ${err.message || err}`);
    }
  }

  function onConnectionState(current, forced) {
    if (current !== call || current.closed) return;
    const state = forced || current.pc.connectionState;
    if (state === "connected") {
      setState("connected");
      clearError();
    } else if (state === "failed") {
      fail(current, "The media connection failed (ICE could not find a path between you and the server). " +
        "A TURN server may be needed on this network.");
    } else if (state === "disconnected" && window.splatcastState === "connected") {
      el.connState.textContent = "Reconnecting…";
    } else if (state === "closed" && window.splatcastState !== "failed") {
      teardown(current, false);
      call = null;
      setState("disconnected");
    }
  }

  function fail(current, message, notifyServer = true) {
    if (current !== call) return;
    showError(message);
    teardown(current, notifyServer);
    setState("failed", "The call ended. Press Reconnect to try again.");
  }

  function openEvents(current) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${scheme}//${location.host}${sessionPath("/events")}`;
    if (current.token) url += `?token=${encodeURIComponent(current.token)}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      console.warn("splatcast: events socket:", err.message);
      return;
    }
    current.ws = ws;
    ws.addEventListener("message", (event) => {
      if (current !== call) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      handleEvent(msg, current);
    });
    ws.addEventListener("close", () => {
      if (current === call && !current.closed) console.info("splatcast: events socket closed");
    });
  }

  function handleEvent(msg, current) {
    switch (msg.type) {
      case "state":
        setConversationState(String(msg.state || "idle"));
        break;
      case "transcript":
        addTranscript(msg.role === "user" ? "user" : "assistant", String(msg.text || ""), msg.final !== false);
        break;
      case "stats":
        window.splatcastServerStats = msg;
        el.statsServer.textContent = `${msg.repeated ?? 0} late · lvl ${msg.ladder_level ?? 0}`;
        break;
      case "error":
        showError(String(msg.message || "the server reported an error"));
        break;
      case "user_speaking":
        el.body.dataset.userSpeaking = String(Boolean(msg.speaking));
        break;
      case "emotion":
        // only the API's (held) emotion moves the picker; a sentence's inferred one is shown as a hint
        if (msg.source === "api" || msg.source === undefined) {
          if (typeof msg.name === "string") el.emotion.value = msg.name;
          if (typeof msg.intensity === "number" && msg.name !== "auto") el.intensity.value = String(msg.intensity);
        } else if (typeof msg.name === "string") {
          el.emotion.title = `the face now: ${msg.name} (${msg.source === "tag" ? "the model's tag" : "from the words"})`;
        }
        break;
      case "interrupted": {
        const said = el.transcript.querySelectorAll("li.assistant");
        if (said.length) said[said.length - 1].classList.add("interrupted");
        break;
      }
      case "closed":
        fail(current, "The server ended this session (idle too long, or closed by the operator).", false);
        break;
      default:
        break;
    }
  }

  // tear the call down locally; tell the server unless it is already gone
  function teardown(current, notifyServer = true) {
    if (current.closed) return;
    current.closed = true;
    clearInterval(current.statsTimer);
    if (notifyServer && current.sessionId) deleteSession(current);
    if (current.ws) {
      try { current.ws.close(1000, "bye"); } catch { /* already closed */ }
    }
    if (current.pc) {
      try { current.pc.close(); } catch { /* already closed */ }
    }
    if (current.micStream) current.micStream.getTracks().forEach((t) => t.stop());
    el.video.srcObject = null;
    window.splatcastSession = null;
  }

  function deleteSession(current) {
    try {
      fetch(`/api/sessions/${encodeURIComponent(current.sessionId)}`, {
        method: "DELETE",
        headers: current.token ? { Authorization: `Bearer ${current.token}` } : {},
        keepalive: true,
      }).catch(() => {});
    } catch { /* page is going away */ }
  }

  async function disconnect() {
    const current = call;
    if (!current) return;
    teardown(current, true);
    call = null;
    setState("disconnected");
    setConversationState("idle");
  }

  // ------------------------------------------------------------------ stats

  function pickStat(value, digits) {
    return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
  }

  async function pollStats(current) {
    if (current !== call || current.closed || !current.pc) return;
    let report;
    try {
      report = await current.pc.getStats();
    } catch {
      return;
    }
    const s = emptyStats();
    let pairId = null;
    const pairs = [];
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "video") {
        s.framesDecoded = r.framesDecoded ?? null;
        s.framesDropped = r.framesDropped ?? 0;
        s.jitter = r.jitter !== undefined ? r.jitter * 1000 : null;
        s.packetsLost = r.packetsLost ?? null;
        s.width = r.frameWidth ?? null;
        s.height = r.frameHeight ?? null;
        s.fps = r.framesPerSecond ?? null;
        const last = current.lastVideo;
        if (s.fps === null && last && r.framesDecoded !== undefined && r.timestamp > last.timestamp) {
          s.fps = ((r.framesDecoded - last.framesDecoded) * 1000) / (r.timestamp - last.timestamp);
        }
        current.lastVideo = { framesDecoded: r.framesDecoded ?? 0, timestamp: r.timestamp };
      } else if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "audio") {
        if (r.audioLevel !== undefined) s.audioLevel = r.audioLevel;
      } else if (r.type === "transport" && r.selectedCandidatePairId) {
        pairId = r.selectedCandidatePairId;
      } else if (r.type === "candidate-pair") {
        pairs.push(r);
      }
    });
    const pair = pairs.find((p) => p.id === pairId) ||
      pairs.find((p) => p.nominated && p.state === "succeeded") ||
      pairs.find((p) => p.state === "succeeded");
    if (pair && pair.currentRoundTripTime !== undefined) s.rtt = pair.currentRoundTripTime * 1000;
    s.timestamp = Date.now();
    window.splatcastStats = s;
    renderStats(s);
  }

  function renderStats(s) {
    el.statsFps.textContent = pickStat(s.fps, 1);
    el.statsDropped.textContent = pickStat(s.framesDropped, 0);
    el.statsDecoded.textContent = pickStat(s.framesDecoded, 0);
    el.statsJitter.textContent = s.jitter === null ? "–" : `${pickStat(s.jitter, 1)} ms`;
    el.statsRtt.textContent = s.rtt === null ? "–" : `${pickStat(s.rtt, 0)} ms`;
    el.statsAudio.value = s.audioLevel || 0;
    el.statsSize.textContent = s.width && s.height ? `${s.width}×${s.height}` : "–";
    const d = el.stats.dataset;
    d.fps = s.fps ?? "";
    d.framesDropped = s.framesDropped ?? "";
    d.framesDecoded = s.framesDecoded ?? "";
    d.jitter = s.jitter ?? "";
    d.rtt = s.rtt ?? "";
    d.audioLevel = s.audioLevel ?? "";
  }

  // ------------------------------------------------------------------ transcript

  function clearTranscript() {
    el.transcript.replaceChildren(el.transcriptEmpty);
    el.transcriptEmpty.hidden = false;
  }

  function addTranscript(role, text, final) {
    if (!text) return;
    el.transcriptEmpty.hidden = true;
    // a partial line of the same role is updated in place until its final version arrives
    let item = el.transcript.querySelector(`li.partial.${role}`);
    if (!item) {
      item = document.createElement("li");
      item.className = role;
      const who = document.createElement("span");
      who.className = "role";
      who.textContent = role === "user" ? "you" : "avatar";
      const body = document.createElement("span");
      body.className = "text";
      item.append(who, body);
      el.transcript.append(item);
    }
    item.querySelector(".text").textContent = text;
    item.classList.toggle("partial", !final);
    el.transcript.scrollTop = el.transcript.scrollHeight;
  }

  // ------------------------------------------------------------------ controls

  el.connect.addEventListener("click", () => {
    if (call && !call.closed) {
      disconnect();
    } else {
      connect();
    }
  });

  el.stageConnect.addEventListener("click", () => connect());
  el.reconnect.addEventListener("click", () => connect());
  el.errorClose.addEventListener("click", clearError);

  el.mic.addEventListener("click", () => {
    if (call && call.micTrack) {
      call.micTrack.enabled = !call.micTrack.enabled;
    } else {
      micWanted = !micWanted;
    }
    updateMicButton();
  });

  el.interrupt.addEventListener("click", () => sessionCall("/interrupt", undefined, "Interrupt"));

  function sendEmotion() {
    clearTimeout(emotionTimer);
    emotionTimer = setTimeout(() => {
      sessionCall("/emotion", { name: el.emotion.value, intensity: Number(el.intensity.value) }, "Emotion");
    }, EMOTION_DEBOUNCE_MS);
  }
  el.emotion.addEventListener("change", sendEmotion);
  el.intensity.addEventListener("input", sendEmotion);

  el.sayForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = el.sayText.value.trim();
    if (!text || !call || !call.sessionId) return;
    el.sayButton.disabled = true;
    try {
      await api("POST", sessionPath("/say"), { text });
      el.sayText.value = "";
    } catch (err) {
      showError(`Say failed: ${err.message}`);
    } finally {
      el.sayButton.disabled = window.splatcastState !== "connected";
      el.sayText.focus();
    }
  });

  function showStats(open) {
    el.statsBody.hidden = !open;
    el.statsToggle.setAttribute("aria-expanded", String(open));
  }
  el.statsToggle.addEventListener("click", () => showStats(el.statsBody.hidden));
  // on phones the overlay would cover the face: start folded (the numbers still update)
  if (window.matchMedia) {
    const narrow = window.matchMedia("(max-width: 600px)");
    if (narrow.matches) showStats(false);
    narrow.addEventListener("change", (event) => showStats(!event.matches));
  }

  window.addEventListener("pagehide", () => {
    if (call) teardown(call, true);
  });

  setState("disconnected");

  // the avatar picker (avatars.js): another avatar during a call reconnects; "talk to it" connects
  if (window.SplatcastAvatars) {
    window.SplatcastAvatars.init({
      token: serverToken,
      onChoose: (id, options) => {
        if ((call && !call.closed) || (options && options.connect)) connect();
      },
    });
  }
})();
