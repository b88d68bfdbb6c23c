// app.js: the page. Loads site.json, the model (its class names and preprocessing come from its own metadata, as
// dogft-predict reads them) and onnxruntime-web; classifies a photo the user picks, drops, pastes or takes.
// Tests and bench/web drive it through `window.dogftPage` (see the end of this file).
import {onnxMetadata, decodeMetadata, softmax, topK, openSetAnswer} from './dogft.js';

const $ = id => document.getElementById(id);
const say = (text, kind = 'info') => { const m = $('message'); m.textContent = text; m.className = kind; m.hidden = !text; };
const pretty = name => name.replace(/_/g, ' ');
const state = {config: null, meta: null, modelBytes: null, ort: null, session: null, backend: null, worker: null, seq: 0, last: null, lastInput: null};

/** Fetch `url`, checked against its subresource-integrity hash; a clear error when it cannot be had. */
async function fetchChecked(url, integrity, what) {
  let r;
  try { r = await fetch(url, integrity ? {integrity} : {}); }
  catch (e) { throw new Error(`cannot load ${what} from ${url} (${e.message}): offline, blocked, or its integrity hash does not match`); }
  if (!r.ok) throw new Error(`cannot load ${what} from ${url}: HTTP ${r.status}`);
  return r;
}

/** onnxruntime-web for `backend` (wasm or webgpu): its module and its WebAssembly binary, both checked against the pinned hashes. */
async function loadRuntime(rt, backend) {
  const files = rt.backends[backend], base = new URL(rt.base, location.href);
  const js = await (await fetchChecked(new URL(files.script.name, base), files.script.integrity, `onnxruntime-web ${rt.version}`)).text();
  const ort = await import(URL.createObjectURL(new Blob([js], {type: 'text/javascript'})));
  ort.env.wasm.wasmBinary = await (await fetchChecked(new URL(files.wasm.name, base), files.wasm.integrity, `onnxruntime-web ${rt.version}'s WebAssembly`)).arrayBuffer();
  // threads need cross-origin isolation (COOP/COEP headers); onnxruntime-web would use half the cores, dogft-predict uses all
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  return ort;
}

async function webgpuAvailable() {
  try { return !!(navigator.gpu && await navigator.gpu.requestAdapter()); } catch { return false; }
}

/** Start (or restart) the session on `backend`. */
async function startSession(backend) {
  const c = state.config;
  say(`loading onnxruntime-web ${c.runtime.version} (${backend}) …`);
  state.ort = await loadRuntime(c.runtime, backend);
  const opts = {executionProviders: [backend], graphOptimizationLevel: 'all'};
  try { state.session = await state.ort.InferenceSession.create(state.modelBytes.slice(), opts); }
  catch (e) { throw new Error(`onnxruntime-web cannot run ${c.model} on ${backend}: ${e.message}` + (backend === 'wasm' ? ' (this browser may lack WebAssembly SIMD)' : '')); }
  state.backend = backend;
  const threads = state.ort.env.wasm.numThreads;
  $('runtime').textContent = `onnxruntime-web ${c.runtime.version} (${c.runtime.source === 'cdn' ? 'from ' + new URL(c.runtime.base, location.href).host : 'served with this page'}) on ` +
    (backend === 'webgpu' ? 'WebGPU' : `WebAssembly, SIMD, ${threads} thread${threads > 1 ? 's' : ''}` +
     (self.crossOriginIsolated ? ' (cross-origin isolated)' : ' (one: the server does not send the cross-origin isolation headers that threads need)'));
  say('');
}

async function init() {
  state.config = await (await fetchChecked('site.json', null, 'the page settings')).json();
  const c = state.config;
  const bytes = new Uint8Array(await (await fetchChecked(c.model, c.model_integrity, `the model ${c.model}`)).arrayBuffer());
  state.modelBytes = bytes;
  state.meta = decodeMetadata(onnxMetadata(bytes), c.metadata.format, c.metadata.required);
  const m = state.meta;
  $('model').textContent = `${m.run || m.model} (${m.precision || 'fp32'}, ${(bytes.length / 2 ** 20).toFixed(1)} MB): ` +
    `${m.class_names.length} breeds: ${m.class_names.map(pretty).join(', ')}`;
  state.worker = new Worker('worker.js', {type: 'module'});
  const wanted = new URLSearchParams(location.search).get('backend');
  if (c.runtime.backends.webgpu && await webgpuAvailable()) {
    $('backend-choice').hidden = false;
    $('backend').value = wanted === 'webgpu' ? 'webgpu' : 'wasm';
    $('backend').onchange = e => startSession(e.target.value).catch(err => say(err.message, 'error'));
  }
  await startSession(wanted === 'webgpu' && !$('backend-choice').hidden ? 'webgpu' : 'wasm');
  document.body.dataset.ready = 'yes';
  return {model: m.run, precision: m.precision, classes: m.class_names, backend: state.backend,
          threads: state.ort.env.wasm.numThreads, crossOriginIsolated: self.crossOriginIsolated, runtime: c.runtime.version};
}

/** The model's input for `file`, prepared in the worker. */
function prepare(file) {
  const id = ++state.seq;
  return new Promise(resolve => {
    const onMessage = ({data}) => { if (data.id === id) { state.worker.removeEventListener('message', onMessage); resolve(data); } };
    state.worker.addEventListener('message', onMessage);
    state.worker.postMessage({id, file, meta: state.meta, limits: state.config.limits, pillowMajor: state.config.pillow_major});
  });
}

/** Run the model on a prepared input: its outputs by name and the milliseconds the run took. */
async function infer(input) {
  const [, h, w] = state.meta.input_size;  // [3, H, W]
  const feeds = {[state.session.inputNames[0]]: new state.ort.Tensor('float32', input, [1, 3, h, w])};
  const t0 = performance.now(), out = await state.session.run(feeds), ms = performance.now() - t0;
  return {out, ms};
}

/** Classify one file: {name, top, probs, none_of_these, reason, imagenet, ms: {prepare, inference}} or {name, error}. */
async function classify(file) {
  const name = file.name || 'pasted image';
  $('result').hidden = true;
  say(`reading ${name} …`);
  const p = await prepare(file);
  if (p.error) { say(`${name}: ${p.error}`, 'error'); return (state.last = {name, error: p.error}); }
  state.lastInput = p.input;
  const {out, ms} = await infer(p.input);
  const names = state.session.outputNames, logits = Array.from(out[names[0]].data), probs = softmax(logits);
  const k = Math.min(3, probs.length), rule = state.meta.open_set;
  const r = {name, probs, top: topK(probs, k).map(i => ({breed: state.meta.class_names[i], prob: probs[i]})),
             ms: {prepare: p.ms, inference: ms}, size: [p.width, p.height]};
  if (rule && (!rule.output || names.includes(rule.output)))
    Object.assign(r, openSetAnswer(logits, rule.output ? Array.from(out[rule.output].data) : null, rule, state.meta.imagenet_classes));
  show(file, r);
  say('');
  return (state.last = r);
}

function show(file, r) {
  const img = $('photo');
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  $('verdict').textContent = r.none_of_these
    ? `None of these (${r.reason}${r.imagenet ? `; ImageNet sees: ${r.imagenet.top} ${(100 * r.imagenet.prob).toFixed(0)}%` : ''}). Closest:`
    : pretty(r.top[0].breed).replace(/^./, c => c.toUpperCase());
  $('bars').replaceChildren(...r.top.map(t => {
    const row = document.createElement('div'); row.className = 'bar';
    row.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    row.querySelector('.label').textContent = pretty(t.breed);
    row.querySelector('.fill').style.width = `${(100 * t.prob).toFixed(1)}%`;
    row.querySelector('.pct').textContent = `${(100 * t.prob).toFixed(1)}%`;
    return row;
  }));
  $('timing').textContent = `inference ${r.ms.inference.toFixed(1)} ms · preparing the ${r.size[0]}×${r.size[1]} photo ${r.ms.prepare.toFixed(0)} ms`;
  $('result').hidden = false;
  document.body.dataset.classified = String(state.seq);
}

const run = file => classify(file).catch(e => say(`${file.name || 'image'}: ${e.message}`, 'error'));

function wire() {
  $('file').onchange = e => { if (e.target.files[0]) run(e.target.files[0]); e.target.value = ''; };
  const drop = $('drop');
  ['dragenter', 'dragover'].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.add('over'); }));
  ['dragleave', 'drop'].forEach(t => drop.addEventListener(t, () => drop.classList.remove('over')));
  drop.addEventListener('drop', e => { e.preventDefault(); const f = e.dataTransfer.files[0]; if (f) run(f); else say('that was not a file: drop a photo file', 'error'); });
  document.addEventListener('paste', e => { const f = [...(e.clipboardData?.files || [])][0]; if (f) run(f); });
  if (navigator.mediaDevices?.getUserMedia) {
    $('camera').hidden = false;
    $('camera').onclick = async () => {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: 'environment'}}), v = $('video');
        v.srcObject = stream; $('live').hidden = false; await v.play();
        $('snap').onclick = () => {
          const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
          c.getContext('2d').drawImage(v, 0, 0);
          stream.getTracks().forEach(t => t.stop()); $('live').hidden = true;
          c.toBlob(b => run(new File([b], 'camera.png', {type: 'image/png'})), 'image/png');
        };
      } catch (e) { say(`the camera is not available: ${e.message}`, 'error'); }
    };
  }
}

wire();
const ready = init().catch(e => { say(e.message, 'error'); document.body.dataset.ready = 'failed'; throw e; });

// For tests and benchmarks: ready (what runs where), classify(File), the last prepared input, and timed runs on it.
window.dogftPage = {
  ready,
  classify,
  get last() { return state.last; },
  lastInput: () => Array.from(state.lastInput || []),
  async timeRuns(n) { const ms = []; for (let i = 0; i < n; i++) ms.push((await infer(state.lastInput.slice())).ms); return ms; },
};
