// splatcast avatar picker and "Create your avatar" flow. Plain JS, no build step, no external files.
//
// Server API used (all same-origin; Authorization: Bearer <server token> when the page was opened as /?token=):
//   GET    /api/avatars                     -> [{id, name, created, source, voice, preview, bundled, ...}]
//   GET    /api/avatars/{id}/preview.png    -> PNG (fetched with the token, shown through a blob URL)
//   GET    /api/voices                      -> [{id, language, bundled, default, ...}]
//   GET    /api/config                      -> {ice_servers, upload_limits: {photo_bytes, video_bytes, video_min_s, video_max_s}}
//   POST   /api/avatars  multipart {name, voice?, file}  -> 202 {id, job}
//   GET    /api/avatars/jobs/{job}          -> {state, stage, progress, position, message, error, avatar}
//   WS     /api/avatars/jobs/{job}/events[?token=]  -> the same objects as the build moves on
//
// The page (app.js) calls SplatcastAvatars.init({token, onChoose}) and reads SplatcastAvatars.selected()
// when it sends its offer; onChoose(id) is called when the user picks another avatar (app.js reconnects).
//
// Hooks for headless tests:
//   window.splatcastAvatar   the selected avatar id
//   window.splatcastBuild    {job, avatar, state, stage, progress, position, message, error} of the last build
//   window.splatcastUpload   {loaded, total, done (all bytes sent), accepted (202)} of the last upload
//   URL ?record=short        the guided recording's phases last 4 s and 3 s instead of 30-50 s and 10 s
"use strict";

(() => {
  const READ_MIN_S = 30; // the reading phase: at least this long before "Next" is offered ...
  const READ_MAX_S = 50; // ... and it moves on by itself after this long
  const LISTEN_S = 10; // then the listening phase (lips closed, nodding along)
  const SHORT = new URLSearchParams(location.search).get("record") === "short";
  const SCRIPT = [
    "Hello! I am recording a short video so that my avatar can look and talk like me.",
    "The quick brown fox jumps over the lazy dog, and a big blue boat floats by.",
    "Peter picked five fresh apples; Sue saw three sheep on the hill, and we were happy.",
    "Now I turn my head a little to the left, then to the right, and back to the camera.",
    "Thank you very much. I will now listen quietly for a few seconds.",
  ];

  const $ = (id) => document.getElementById(id);
  let token = null;
  let onChoose = () => {};
  let avatars = [];
  let selectedId = localStorage.getItem("splatcast.avatar") || "default";
  const previewUrls = new Map(); // avatar id -> blob URL
  let limits = { photo_bytes: 20 * 1024 * 1024, video_bytes: 200 * 1024 * 1024, video_min_s: 3, video_max_s: 300 };

  window.splatcastAvatar = selectedId;
  window.splatcastBuild = null;
  window.splatcastUpload = null;

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers() });
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  async function errorText(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = body.error || JSON.stringify(body);
    } catch {
      detail = response.statusText;
    }
    return `${response.status}: ${detail}`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function formatBytes(n) {
    return n >= 1048576 ? `${Math.round(n / 1048576)} MB` : `${Math.round(n / 1024)} kB`;
  }

  // ------------------------------------------------------------------ picker

  async function previewUrl(entry) {
    if (previewUrls.has(entry.id)) return previewUrls.get(entry.id);
    try {
      const response = await fetch(entry.preview, { headers: headers() });
      if (!response.ok) return null;
      const url = URL.createObjectURL(await response.blob());
      previewUrls.set(entry.id, url);
      return url;
    } catch {
      return null;
    }
  }

  async function refresh() {
    try {
      avatars = await getJSON("/api/avatars");
    } catch (err) {
      console.warn("splatcast: /api/avatars:", err.message);
      avatars = [{ id: "default", name: "Default", preview: "/api/avatars/default/preview.png", bundled: true }];
    }
    if (!avatars.some((a) => a.id === selectedId)) select("default", false);
    render();
  }

  function render() {
    const list = $("avatar-list");
    if (!list) return;
    list.replaceChildren();
    for (const entry of avatars) {
      const img = el("img", { alt: "", width: 96, height: 96, loading: "lazy" });
      previewUrl(entry).then((url) => {
        if (url) img.src = url;
      });
      const card = el(
        "button",
        {
          type: "button",
          class: "avatar-card",
          role: "radio",
          "aria-checked": String(entry.id === selectedId),
          "data-avatar": entry.id,
          title: `${entry.name}${entry.source ? ` (${entry.source})` : ""}`,
          onclick: () => select(entry.id, true),
        },
        el("span", { class: "avatar-thumb" }, img),
        el("span", { class: "avatar-name" }, entry.name),
      );
      list.append(card);
    }
    list.append(
      el(
        "button",
        { type: "button", class: "avatar-card avatar-new", id: "create-avatar", onclick: openCreate },
        el("span", { class: "avatar-thumb", "aria-hidden": "true" }, "+"),
        el("span", { class: "avatar-name" }, "Create your avatar"),
      ),
    );
  }

  function select(id, notify) {
    const changed = id !== selectedId;
    selectedId = id;
    window.splatcastAvatar = id;
    localStorage.setItem("splatcast.avatar", id);
    for (const card of document.querySelectorAll(".avatar-card[data-avatar]")) {
      card.setAttribute("aria-checked", String(card.dataset.avatar === id));
    }
    if (notify && changed) onChoose(id);
  }

  // ------------------------------------------------------------------ create dialog

  const flow = { stream: null, recorder: null, chunks: [], timer: null, file: null, ws: null, poll: null };

  function openCreate() {
    const dialog = $("create-dialog");
    resetCreate();
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    loadVoices();
  }

  function closeCreate() {
    stopCamera();
    closeBuildWatch();
    const dialog = $("create-dialog");
    if (dialog.open) dialog.close();
  }

  function showStep(name) {
    for (const step of document.querySelectorAll("#create-dialog [data-step]")) {
      step.hidden = step.dataset.step !== name;
    }
    $("create-dialog").dataset.step = name;
  }

  function resetCreate() {
    flow.file = null;
    flow.chunks = [];
    $("create-error").hidden = true;
    $("create-name").value = "";
    $("create-file").value = "";
    $("create-chosen").textContent = "";
    $("create-upload").disabled = true;
    $("build-bar").value = 0;
    $("build-text").textContent = "";
    $("upload-bar").value = 0;
    showStep("choose");
  }

  function createError(message) {
    $("create-error-text").textContent = message;
    $("create-error").hidden = false;
  }

  async function loadVoices() {
    const select = $("create-voice");
    select.replaceChildren(el("option", { value: "" }, "the server's default voice"));
    try {
      const voices = await getJSON("/api/voices");
      for (const v of voices) {
        if (v.default) continue;
        select.append(el("option", { value: v.id }, `${v.id}${v.language ? ` (${v.language})` : ""}`));
      }
    } catch (err) {
      console.warn("splatcast: /api/voices:", err.message);
    }
  }

  // --- recording with the webcam

  async function startCamera() {
    $("create-error").hidden = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
      createError("Recording needs a camera and a secure page (https or localhost). Upload a file instead.");
      return;
    }
    try {
      flow.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "user" },
        audio: true,
      });
    } catch (err) {
      try {
        flow.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      } catch {
        createError(`The camera is not available (${err.name === "NotAllowedError" ? "permission denied" : err.message}). Upload a file instead.`);
        return;
      }
    }
    $("record-preview").srcObject = flow.stream;
    $("record-preview").play().catch(() => {});
    $("record-script").replaceChildren(...SCRIPT.map((line) => el("p", {}, line)));
    $("record-phase").textContent = "Get ready: read the lines below aloud, facing the camera.";
    $("record-time").textContent = "0 s";
    $("record-start").disabled = false;
    $("record-next").hidden = true;
    showStep("record");
  }

  function stopCamera() {
    clearInterval(flow.timer);
    flow.timer = null;
    if (flow.recorder && flow.recorder.state !== "inactive") {
      flow.recorder.onstop = null;
      flow.recorder.stop();
    }
    flow.recorder = null;
    if (flow.stream) flow.stream.getTracks().forEach((t) => t.stop());
    flow.stream = null;
  }

  function pickMime() {
    for (const type of ["video/webm;codecs=vp8,opus", "video/webm;codecs=vp8", "video/webm", "video/mp4"]) {
      if (MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported(type)) return type;
    }
    return "";
  }

  function startRecording() {
    const mime = pickMime();
    flow.chunks = [];
    flow.recorder = new MediaRecorder(flow.stream, mime ? { mimeType: mime } : undefined);
    flow.recorder.ondataavailable = (event) => {
      if (event.data && event.data.size) flow.chunks.push(event.data);
    };
    flow.recorder.onstop = finishRecording;
    flow.recorder.start(1000);
    $("record-start").disabled = true;
    $("create-dialog").dataset.recording = "reading";
    const readMin = SHORT ? 4 : READ_MIN_S;
    const readMax = SHORT ? 6 : READ_MAX_S;
    const listen = SHORT ? 3 : LISTEN_S;
    const started = performance.now();
    let listenFrom = null;
    const tick = () => {
      const t = (performance.now() - started) / 1000;
      $("record-time").textContent = `${Math.floor(t)} s`;
      if (listenFrom === null) {
        $("record-phase").textContent =
          t < readMin ? `Read the lines aloud, calmly (${Math.ceil(readMin - t)} s to go at least)` : "Finish the line you are on, then press Next";
        $("record-next").hidden = t < readMin;
        if (t >= readMax) listenFrom = t;
      } else {
        const left = listen - (t - listenFrom);
        $("record-phase").textContent = `Now listen quietly for ${Math.max(0, Math.ceil(left))} s — lips closed, look at the camera`;
        $("create-dialog").dataset.recording = "listening";
        $("record-next").hidden = true;
        if (left <= 0) {
          clearInterval(flow.timer);
          flow.timer = null;
          flow.recorder.stop();
        }
      }
    };
    $("record-next").onclick = () => {
      if (listenFrom === null) listenFrom = (performance.now() - started) / 1000;
    };
    flow.timer = setInterval(tick, 200);
    tick();
  }

  function finishRecording() {
    const type = (flow.recorder && flow.recorder.mimeType) || "video/webm";
    const blob = new Blob(flow.chunks, { type });
    const ext = type.includes("mp4") ? "mp4" : "webm";
    flow.file = new File([blob], `recording.${ext}`, { type });
    $("create-dialog").dataset.recording = "done";
    stopCamera();
    $("create-chosen").textContent = `Your recording (${formatBytes(blob.size)})`;
    $("create-upload").disabled = false;
    showStep("details");
  }

  // --- a file

  function chooseFile(file) {
    $("create-error").hidden = true;
    if (!file) return;
    const video = file.type.startsWith("video/");
    const limit = video ? limits.video_bytes : limits.photo_bytes;
    if (file.size > limit) {
      createError(`That ${video ? "video" : "photo"} is ${formatBytes(file.size)}; the limit is ${formatBytes(limit)}.`);
      return;
    }
    flow.file = file;
    $("create-chosen").textContent = `${file.name} (${formatBytes(file.size)})`;
    $("create-upload").disabled = false;
    showStep("details");
  }

  // --- upload and build

  function upload() {
    if (!flow.file) return;
    const name = $("create-name").value.trim() || "My avatar";
    const form = new FormData();
    form.append("name", name);
    if ($("create-voice").value) form.append("voice", $("create-voice").value);
    form.append("file", flow.file, flow.file.name);
    $("create-upload").disabled = true;
    $("create-error").hidden = true;
    showStep("build");
    $("build-text").textContent = "Uploading…";
    window.splatcastUpload = { loaded: 0, total: flow.file.size, done: false };
    const xhr = new XMLHttpRequest(); // XHR: fetch() reports no upload progress
    xhr.open("POST", "/api/avatars");
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      $("upload-bar").value = event.loaded / event.total;
      window.splatcastUpload = { loaded: event.loaded, total: event.total, done: false };
    };
    xhr.upload.onload = () => {
      // every byte is on the server; it now checks the file (readable, one face) before it queues the build
      $("upload-bar").value = 1;
      $("build-text").textContent = "Checking the file (readable, one face)…";
      window.splatcastUpload = Object.assign({}, window.splatcastUpload, { done: true });
    };
    xhr.onerror = () => failUpload("the upload failed: cannot reach the server");
    xhr.onload = () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = {};
      }
      if (xhr.status !== 202) {
        failUpload(body.error || `the server answered ${xhr.status}`);
        return;
      }
      $("upload-bar").value = 1;
      window.splatcastUpload = Object.assign({}, window.splatcastUpload, { done: true, accepted: true });
      watchBuild(body.job, body.id);
    };
    xhr.send(form);
  }

  function failUpload(message) {
    showStep("details");
    $("create-upload").disabled = false;
    createError(message);
  }

  function describe(job) {
    if (job.state === "queued") {
      return job.position > 0 ? `Waiting: ${job.position} build${job.position > 1 ? "s" : ""} ahead` : "Starting…";
    }
    if (job.state === "running") return `${Math.round(job.progress * 100)} % — ${job.message || job.stage}`;
    if (job.state === "done") return "Your avatar is ready.";
    return `The build ${job.state}: ${job.error || "unknown reason"}`;
  }

  function onBuild(job) {
    window.splatcastBuild = job;
    $("build-bar").value = job.progress || 0;
    $("build-text").textContent = describe(job);
    $("create-dialog").dataset.build = job.state;
    if (job.state === "done") {
      closeBuildWatch();
      refresh().then(async () => {
        const entry = avatars.find((a) => a.id === job.avatar);
        const url = entry ? await previewUrl(entry) : null;
        if (url) $("create-done-preview").src = url;
        showStep("done");
      });
      $("talk-to-it").onclick = () => {
        closeCreate();
        select(job.avatar, false);
        onChoose(job.avatar, { connect: true });
      };
    } else if (job.state === "failed" || job.state === "cancelled") {
      closeBuildWatch();
      showStep("details");
      $("create-upload").disabled = false;
      createError(describe(job));
    }
  }

  function watchBuild(jobId, avatarId) {
    onBuild({ job: jobId, avatar: avatarId, state: "queued", stage: "queued", progress: 0, position: 0 });
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${scheme}//${location.host}/api/avatars/jobs/${encodeURIComponent(jobId)}/events`;
    if (token) url += `?token=${encodeURIComponent(token)}`;
    try {
      flow.ws = new WebSocket(url);
      flow.ws.onmessage = (event) => {
        try {
          onBuild(JSON.parse(event.data));
        } catch {
          /* not JSON */
        }
      };
      flow.ws.onclose = () => {
        flow.ws = null;
        const last = window.splatcastBuild;
        if (last && (last.state === "queued" || last.state === "running")) pollBuild(jobId);
      };
    } catch {
      pollBuild(jobId);
    }
  }

  function pollBuild(jobId) {
    clearInterval(flow.poll);
    flow.poll = setInterval(async () => {
      try {
        onBuild(await getJSON(`/api/avatars/jobs/${encodeURIComponent(jobId)}`));
      } catch (err) {
        console.warn("splatcast: build status:", err.message);
      }
    }, 1000);
  }

  function closeBuildWatch() {
    clearInterval(flow.poll);
    flow.poll = null;
    if (flow.ws) {
      flow.ws.onclose = null;
      flow.ws.close();
      flow.ws = null;
    }
  }

  // ------------------------------------------------------------------ wiring

  async function init(options) {
    token = options.token || null;
    onChoose = options.onChoose || onChoose;
    $("record-choice").addEventListener("click", startCamera);
    $("create-file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
    $("record-start").addEventListener("click", startRecording);
    $("create-upload").addEventListener("click", upload);
    $("create-back").addEventListener("click", () => {
      stopCamera();
      resetCreate();
    });
    for (const button of document.querySelectorAll("[data-close-create]")) {
      button.addEventListener("click", closeCreate);
    }
    $("create-dialog").addEventListener("close", () => {
      stopCamera();
      closeBuildWatch();
    });
    try {
      const config = await getJSON("/api/config");
      if (config.upload_limits) limits = Object.assign(limits, config.upload_limits);
      $("create-limits").textContent =
        `Photos up to ${formatBytes(limits.photo_bytes)}, videos up to ${formatBytes(limits.video_bytes)} ` +
        `and ${Math.round(limits.video_max_s / 60)} min. One person, facing the camera.`;
    } catch {
      /* defaults stay */
    }
    await refresh();
  }

  window.SplatcastAvatars = { init, refresh, selected: () => selectedId, select };
})();
