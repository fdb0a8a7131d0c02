// lp-live page: the camera goes to the server over WebRTC, the animated stream comes back.
// Controls go over a data channel; the server sends this session's figures back on it twice a second.
// Every figure on the overlay is measured: here (WebRTC stats, displayed frames) or on the server.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};
const $ = (id) => document.getElementById(id);
const RATE_WINDOW_MS = 10000; // output FPS over the frames shown in the last 10 s

// The page's own measurements, also read by the browser test.
const lp = (window.lpStats = {
  state: "idle", framesShown: 0, framesDecoded: 0, fps: null, inferMs: null, latencyMs: null, latencyParts: null,
  drops: null, speedRatio: null, server: null, error: null,
});

let pc = null;
let channel = null;
let camera = null;
let statsTimer = null;
let showFigures = true;
let settings = {};
let modes = []; // the engines, as the server names them (its figures carry them)
const shownAt = [];
const previous = {};

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...auth, ...(init.headers || {}) } });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setStatus(text) {
  lp.state = text;
  $("status").textContent = text;
}

function showError(err) {
  lp.error = String(err.message || err);
  $("error").textContent = lp.error;
}

function iceGathered(conn) {
  // aiortc takes the candidates inside the offer (no trickle): wait for them, at most 3 s
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (conn.iceGatheringState === "complete") resolve();
    };
    conn.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

function countShown(video) {
  // displayed frames of the animated stream, for the output FPS
  if (!video.requestVideoFrameCallback) return;
  const onFrame = (now) => {
    lp.framesShown += 1;
    shownAt.push(now);
    while (shownAt.length && now - shownAt[0] > RATE_WINDOW_MS) shownAt.shift();
    lp.fps = shownAt.length > 1 ? (1000 * (shownAt.length - 1)) / (shownAt[shownAt.length - 1] - shownAt[0]) : null;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function start() {
  $("error").textContent = "";
  $("start").disabled = true;
  try {
    setStatus("asking for the camera");
    camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    $("local").srcObject = camera;
    pc = new RTCPeerConnection();
    channel = pc.createDataChannel("control");
    channel.onmessage = (event) => onMessage(JSON.parse(event.data));
    pc.addTransceiver(camera.getVideoTracks()[0], { direction: "sendrecv" });
    pc.ontrack = (event) => {
      $("remote").srcObject = new MediaStream([event.track]);
    };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState === "connected" ? "streaming" : pc.connectionState);
      if (["failed", "closed"].includes(pc.connectionState)) stop();
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    setStatus("connecting");
    const answer = await api("/api/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", source: $("source").value }),
    });
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    statsTimer = setInterval(measure, 500);
    $("stop").disabled = false;
  } catch (err) {
    showError(err);
    stop();
  }
}

function stop() {
  clearInterval(statsTimer);
  if (pc) pc.close();
  if (camera) camera.getTracks().forEach((t) => t.stop());
  pc = channel = camera = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  if (!["failed"].includes(lp.state)) setStatus("stopped");
}

function onMessage(message) {
  if (message.error) showError(message.error);
  if (!message.stats) return;
  const s = (lp.server = message.stats);
  settings = { mode: s.mode, paste_back: s.paste_back, stitching: s.stitching, mirror: s.mirror };
  if (Array.isArray(s.modes)) modes = s.modes;
  lp.inferMs = s.infer_ms;
  lp.speedRatio = s.speed_ratio;
  $("local").classList.toggle("mirrored", !!s.mirror);
  for (const button of document.querySelectorAll("button[data-control]")) {
    const key = button.dataset.control;
    const value = key === "hud" ? showFigures : settings[key];
    const label = button.querySelector("b");
    if (label) label.textContent = typeof value === "boolean" ? (value ? "on" : "off") : value;
  }
}

function perFrame(total, count, key) {
  // seconds per frame over the last interval, from a cumulative total and count
  const before = previous[key];
  previous[key] = [total, count];
  if (!before || count <= before[1]) return null;
  return (total - before[0]) / (count - before[1]);
}

async function measure() {
  if (!pc) return;
  const report = await pc.getStats();
  let rtt = null;
  let encode = null;
  let jitter = null;
  let decode = null;
  let decoderDrops = 0;
  report.forEach((r) => {
    if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime;
    if (r.type === "outbound-rtp" && r.kind === "video" && r.framesEncoded !== undefined) {
      encode = perFrame(r.totalEncodeTime, r.framesEncoded, "encode");
    }
    if (r.type === "inbound-rtp" && r.kind === "video") {
      jitter = perFrame(r.jitterBufferDelay, r.jitterBufferEmittedCount, "jitter");
      decode = perFrame(r.totalDecodeTime, r.framesDecoded, "decode");
      decoderDrops = r.framesDropped || 0;
      lp.framesDecoded = r.framesDecoded || 0;
      if (!$("remote").requestVideoFrameCallback && r.framesPerSecond !== undefined) lp.fps = r.framesPerSecond;
    }
  });
  const s = lp.server;
  if (s) {
    lp.drops = s.dropped_in + s.dropped_out + decoderDrops;
    const serverMs = s.server_latency_ms.p50;
    // capture-to-display, as the sum of its measured parts (each one-way network leg is RTT / 2)
    const parts = { encode: encode, network: rtt, server: serverMs === null ? null : serverMs / 1000, jitter, decode };
    if (Object.values(parts).every((v) => v !== null)) {
      lp.latencyParts = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, Math.round(v * 1000)]));
      lp.latencyMs = Object.values(lp.latencyParts).reduce((a, b) => a + b, 0);
    }
  }
  drawOverlay();
}

const fmt = (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function drawOverlay() {
  const s = lp.server;
  const overlay = $("overlay");
  overlay.classList.toggle("hidden", !showFigures);
  if (!s) return;
  const parts = lp.latencyParts;
  overlay.textContent = [
    `output ${fmt(lp.fps, 1)} fps  (${lp.framesShown} shown)`,
    `inference ${fmt(lp.inferMs)} ms  ${s.engine || s.mode} on ${s.device}, ${s.weights} weights`,
    ...(s.background ? [`${s.background} (switches by itself when ready)`] : []),
    `latency ${fmt(lp.latencyMs)} ms capture→display` +
      (parts ? `\n  = encode ${parts.encode} + network ${parts.network} + server ${parts.server}` +
        ` + jitter ${parts.jitter} + decode ${parts.decode}` : ""),
    `dropped ${fmt(lp.drops)}  (server ${s.dropped_in + s.dropped_out})`,
    `speed ratio ${lp.speedRatio ? fmt(lp.speedRatio, 2) + "x optimized vs baseline" : "– (run both engines)"}`,
    `sessions on this server ${s.sessions}`,
  ].join("\n");
}

function press(key) {
  const message = {
    b: () => (modes.length ? { mode: modes[(modes.indexOf(settings.mode) + 1) % modes.length] } : null),
    r: () => ({ reanchor: true }),
    p: () => ({ paste_back: !settings.paste_back }),
    s: () => ({ stitching: !settings.stitching }),
    m: () => ({ mirror: !settings.mirror }),
  }[key];
  if (key === "h") {
    showFigures = !showFigures;
    drawOverlay();
    document.querySelector('button[data-key="h"] b').textContent = showFigures ? "on" : "off";
  } else if (message && channel && channel.readyState === "open") {
    const body = message();
    if (body) channel.send(JSON.stringify(body));
  }
}

async function uploadPhoto(file) {
  try {
    const { id, width, height } = await api("/api/sources", { method: "POST", body: file });
    const option = new Option(`${file.name} (${width}×${height})`, id, true, true);
    $("source").add(option);
    $("error").textContent = "";
  } catch (err) {
    showError(err);
  }
}

$("start").onclick = start;
$("stop").onclick = stop;
$("upload").onchange = (event) => event.target.files[0] && uploadPhoto(event.target.files[0]);
for (const button of document.querySelectorAll("button[data-key]")) button.onclick = () => press(button.dataset.key);
document.addEventListener("keydown", (event) => {
  if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  press(event.key.toLowerCase());
});
countShown($("remote"));
if (params.get("autostart")) start();
