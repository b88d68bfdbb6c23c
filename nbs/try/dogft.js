// dogft.js: what the page computes, written to give the numbers dogft-predict gives.
// Pure functions, no DOM: imported by the page (app.js) and its preprocessing worker (worker.js).
// The Python originals are in dogft.predict (nbs/05b_predict.ipynb) and dogft.core; each function names its original.

// ---- the model file: ONNX metadata (dogft.core.decode_metadata) -------------------------------------------

/** The `metadata_props` of an ONNX ModelProto (field 14: key 1, value 2) as {key: value}, read from its protobuf bytes. */
export function onnxMetadata(bytes) {
  const props = {}, dec = new TextDecoder();
  const varint = (b, p) => { let v = 0, m = 1, c; do { c = b[p.i++]; v += (c & 0x7f) * m; m *= 128; } while (c & 0x80); return v; };
  const fields = (b, each) => {  // each(fieldNumber, bytesOfLengthDelimited) for every length-delimited field
    const p = {i: 0};
    while (p.i < b.length) {
      const tag = varint(b, p), field = Math.floor(tag / 8), wire = tag % 8;
      if (wire === 0) varint(b, p);
      else if (wire === 1) p.i += 8;
      else if (wire === 5) p.i += 4;
      else if (wire === 2) { const n = varint(b, p); each(field, b.subarray(p.i, p.i + n)); p.i += n; }
      else throw new Error(`not an ONNX file (protobuf wire type ${wire} at byte ${p.i})`);
      if (p.i > b.length) throw new Error('not an ONNX file (it ends inside a field): is the download complete?');
    }
  };
  fields(bytes, (f, sub) => {
    if (f !== 14) return;
    let k = '', v = '';
    fields(sub, (g, s) => { if (g === 1) k = dec.decode(s); else if (g === 2) v = dec.decode(s); });
    props[k] = v;
  });
  return props;
}

/** dogft.core.decode_metadata: the JSON-decoded values, checked for what the predictor needs. */
export function decodeMetadata(props, formatVersion, required) {
  if (!('dogft_format' in props)) throw new Error('the model has no dogft metadata: export it with dogft-export');
  if (parseInt(props.dogft_format) > formatVersion)
    throw new Error(`the model's metadata format ${props.dogft_format} is newer than this page (${formatVersion}): write the page again with this dogft-export`);
  const meta = {};
  for (const [k, v] of Object.entries(props)) if (k !== 'dogft_format') meta[k] = JSON.parse(v);
  const missing = required.filter(k => !(k in meta));
  if (missing.length) throw new Error(`the model's metadata lacks ${missing.join(', ')}: export it again with dogft-export`);
  return meta;
}

// ---- the photo: checks before decoding (dogft.predict.read_image_bytes, load_image) --------------------------

const SIGNATURES = [['JPEG', [0xff, 0xd8, 0xff]], ['PNG', [0x89, 0x50, 0x4e, 0x47]], ['GIF', [0x47, 0x49, 0x46, 0x38]], ['BMP', [0x42, 0x4d]]];

/** The image format of a file's first bytes (JPEG, PNG, GIF, BMP, WebP), or null when it is not an image. */
export function imageFormat(head) {
  for (const [name, sig] of SIGNATURES) if (sig.every((b, i) => head[i] === b)) return name;
  const tag = String.fromCharCode(...head.subarray(0, 12));
  if (tag.startsWith('RIFF') && tag.slice(8, 12) === 'WEBP') return 'WebP';
  return null;
}

/** Width and height from an image's header (JPEG, PNG, GIF, BMP, WebP), without decoding it; null when the header does not say. */
export function imageSize(b, fmt) {
  const u16 = i => b[i] << 8 | b[i + 1], le16 = i => b[i] | b[i + 1] << 8, le24 = i => b[i] | b[i + 1] << 8 | b[i + 2] << 16;
  const le32 = i => (b[i] | b[i + 1] << 8 | b[i + 2] << 16) + b[i + 3] * 2 ** 24, be32 = i => b[i] * 2 ** 24 + (b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3]);
  if (fmt === 'PNG' && b.length >= 24) return [be32(16), be32(20)];
  if (fmt === 'GIF' && b.length >= 10) return [le16(6), le16(8)];
  if (fmt === 'BMP' && b.length >= 26) return [le32(18), Math.abs(le32(22) | 0)];
  if (fmt === 'WebP' && b.length >= 30) {
    const chunk = String.fromCharCode(...b.subarray(12, 16));
    if (chunk === 'VP8X') return [le24(24) + 1, le24(27) + 1];
    if (chunk === 'VP8 ') return [le16(26) & 0x3fff, le16(28) & 0x3fff];
    if (chunk === 'VP8L') { const v = le32(21); return [(v & 0x3fff) + 1, ((v >>> 14) & 0x3fff) + 1]; }
  }
  if (fmt === 'JPEG') {  // walk the markers to the first start-of-frame
    for (let i = 2; i + 9 < b.length;) {
      if (b[i] !== 0xff) return null;
      const m = b[i + 1];
      if (m === 0xff) { i++; continue; }
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) return [u16(i + 7), u16(i + 5)];
      i += 2 + u16(i + 2);
    }
  }
  return null;
}

/** Why a file cannot be classified, from its size, its first bytes (`head`, up to 256 kB) and its last kilobyte; null when none is seen. */
export function fileProblem(size, head, tail, limits) {
  if (size > limits.maxBytes) return `too large for an image (${(size / 1e6).toFixed(1)} MB, more than the ${(limits.maxBytes / 1e6).toFixed(1)} MB limit)`;
  if (size === 0) return 'an empty file, not an image';
  const fmt = imageFormat(head);
  if (!fmt) return 'not an image: its first bytes are not those of a JPEG, PNG, WebP, GIF or BMP file';
  const has = (bytes, sig) => { for (let i = bytes.length - sig.length; i >= 0; i--) if (sig.every((b, j) => bytes[i + j] === b)) return true; return false; };
  if (fmt === 'JPEG' && !has(tail, [0xff, 0xd9])) return 'corrupt or truncated image (the JPEG has no end marker: the file was cut short)';
  if (fmt === 'PNG' && !has(tail, [0x49, 0x45, 0x4e, 0x44])) return 'corrupt or truncated image (the PNG has no IEND chunk: the file was cut short)';
  const wh = imageSize(head, fmt);
  if (wh) return pixelProblem(wh[0], wh[1], limits.maxPixels);
  return null;
}

/** Why a `width`×`height` image is too large for the page, or null. */
export function pixelProblem(width, height, maxPixels) {
  if (width * height <= maxPixels) return null;
  return `too large an image (${width}×${height}, ${(width * height / 1e6).toFixed(0)} megapixels, more than the ${(maxPixels / 1e6).toFixed(0)} this page reads): make it smaller first`;
}

// ---- preprocessing: Pillow's resampling, timm's eval crop (dogft.predict.resize_crop, preprocess) -------------

const FILTERS = {  // Pillow's src/libImaging/Resample.c: support and kernel
  box: [0.5, x => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0)],
  bilinear: [1.0, x => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; }],
  hamming: [1.0, x => { x = Math.abs(x); if (x === 0.0) return 1.0; if (x >= 1.0) return 0.0; x *= Math.PI; return Math.sin(x) / x * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(x)); }],  // 0.54f, 0.46f in C
  bicubic: [2.0, x => { const a = -0.5; x = Math.abs(x); if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
                        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a; return 0.0; }],
  lanczos: [3.0, x => { const sinc = t => { if (t === 0.0) return 1.0; t *= Math.PI; return Math.sin(t) / t; };
                        return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }],
};
const PRECISION_BITS = 32 - 8 - 2, ONE = 2 ** PRECISION_BITS, HALF = 2 ** (PRECISION_BITS - 1);

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel its first input pixel, count and fixed-point weights. */
function coefficients(inSize, outSize, filter) {
  const [fsupport, fn] = filter, scale = inSize / outSize, filterscale = Math.max(scale, 1.0);
  const support = fsupport * filterscale, ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2), kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0), xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) { w[x] = fn((x + xmin - center + 0.5) * ss); ww += w[x]; }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x], v = k * ONE;
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
    }
    bounds[xx * 2] = xmin; bounds[xx * 2 + 1] = xmax;
  }
  return {bounds, kk, ksize};
}

const clip8 = ss => { const v = Math.floor(ss / ONE); return v < 0 ? 0 : v > 255 ? 255 : v; };

/** One Pillow pass (ImagingResampleHorizontal_8bpc or ..Vertical_8bpc) of `img` to `size` pixels along `axis` (0: x, 1: y). */
function resamplePass(img, size, filter, axis) {
  const inSize = axis ? img.height : img.width, {bounds, kk, ksize} = coefficients(inSize, size, filter);
  const W = axis ? img.width : size, H = axis ? size : img.height, out = new Uint8ClampedArray(W * H * 4), d = img.data;
  const step = axis ? img.width * 4 : 4;  // from one input pixel to the next along the axis
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const o = axis ? y : x, first = bounds[o * 2], n = bounds[o * 2 + 1], k0 = o * ksize;
    let s0 = HALF, s1 = HALF, s2 = HALF;
    for (let i = 0, p = axis ? (first * img.width + x) * 4 : (y * img.width + first) * 4; i < n; i++, p += step) {
      const k = kk[k0 + i]; s0 += d[p] * k; s1 += d[p + 1] * k; s2 += d[p + 2] * k;
    }
    const q = (y * W + x) * 4;
    out[q] = clip8(s0); out[q + 1] = clip8(s1); out[q + 2] = clip8(s2); out[q + 3] = 255;
  }
  return {data: out, width: W, height: H};
}

/** Pillow's `Image.resize((width, height), filter)` of an RGB image `src` ({data: RGBA bytes, width, height}), bit for bit.
    Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the width;
    earlier versions always run the horizontal pass first: `pillowMajor` says which Pillow dogft-predict uses. */
export function resize(src, width, height, interpolation, pillowMajor = 13) {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`interpolation ${JSON.stringify(interpolation)} is not one this page implements (${Object.keys(FILTERS).join(', ')})`);
  const dy = src.height - height, verticalFirst = pillowMajor >= 13 && dy > 0 && dy > (src.width - width) * 2;
  let img = src;
  if (verticalFirst) {
    img = resamplePass(img, height, filter, 1);
    if (width !== src.width) img = resamplePass(img, width, filter, 0);
  } else {
    if (width !== src.width) img = resamplePass(img, width, filter, 0);
    if (height !== src.height) img = resamplePass(img, height, filter, 1);
  }
  return img;
}

/** Python's round(): halves to the even neighbour. */
export const pyRound = x => { const f = Math.floor(x), r = x - f; return r > 0.5 || (r === 0.5 && f % 2 !== 0) ? f + 1 : f; };

/** dogft.predict._crop_or_pad: centre-crop to h×w (torchvision's rounding), padding with `fill` where the image is smaller. */
export function cropOrPad(img, h, w, fill = [0, 0, 0]) {
  if (w > img.width || h > img.height) {
    const l = w > img.width ? Math.floor((w - img.width) / 2) : 0, t = h > img.height ? Math.floor((h - img.height) / 2) : 0;
    const W = Math.max(w, img.width), H = Math.max(h, img.height), out = new Uint8ClampedArray(W * H * 4);
    for (let i = 0; i < W * H; i++) { out[i * 4] = fill[0]; out[i * 4 + 1] = fill[1]; out[i * 4 + 2] = fill[2]; out[i * 4 + 3] = 255; }
    for (let y = 0; y < img.height; y++) out.set(img.data.subarray(y * img.width * 4, (y + 1) * img.width * 4), ((y + t) * W + l) * 4);
    img = {data: out, width: W, height: H};
  }
  const top = pyRound((img.height - h) / 2.0), left = pyRound((img.width - w) / 2.0);
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) out.set(img.data.subarray(((y + top) * img.width + left) * 4, ((y + top) * img.width + left + w) * 4), y * w * 4);
  return {data: out, width: w, height: h};
}

/** dogft.predict.resize_crop: timm's eval resize and crop (`center`, `squash` or `border`) to exactly `input_size`. */
export function resizeCrop(img, meta, pillowMajor = 13) {
  const [h, w] = meta.input_size.slice(-2), pct = meta.crop_pct || 0.875, mode = meta.crop_mode || 'center', interp = meta.interpolation;
  const sh = Math.floor(h / pct), sw = Math.floor(w / pct);
  if (mode === 'squash') return cropOrPad(resize(img, sw, sh, interp, pillowMajor), h, w);
  if (mode === 'border') {
    const r = Math.max(img.height / sh, img.width / sw);
    return cropOrPad(resize(img, pyRound(img.width / r), pyRound(img.height / r), interp, pillowMajor), h, w, meta.mean.map(v => pyRound(255 * v)));
  }
  if (mode !== 'center') throw new Error(`unknown crop_mode ${JSON.stringify(mode)} in the model's metadata`);
  let nw, nh;
  if (sh === sw) {  // torchvision's Resize(int): the shorter side to `sh`, the longer one truncated
    const short = Math.min(img.width, img.height), long = Math.max(img.width, img.height), l = Math.trunc(sh * long / short);
    [nw, nh] = img.width <= img.height ? [sh, l] : [l, sh];
  } else {  // timm's ResizeKeepRatio
    const r = Math.min(img.height / sh, img.width / sw);
    [nw, nh] = [pyRound(img.width / r), pyRound(img.height / r)];
  }
  return cropOrPad(resize(img, nw, nh, interp, pillowMajor), h, w);
}

/** dogft.predict.preprocess: float32 [1,3,H,W], scaled to [0,1], minus mean, over std, in float32 as numpy computes it. */
export function toTensor(img, meta) {
  const f = Math.fround, n = img.width * img.height, x = new Float32Array(3 * n);
  const mean = meta.mean.map(f), std = meta.std.map(f);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) x[c * n + i] = f(f(f(img.data[i * 4 + c] / 255) - mean[c]) / std[c]);
  return x;
}

// ---- the answer: probabilities, top-k, open set (dogft.predict.softmax, open_set_answer, Classifier.predict) ----

/** Softmax of one row of logits, in float64. */
export function softmax(z) {
  const m = Math.max(...z), e = Array.from(z, v => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map(v => v / s);
}

/** The indices of the k largest values, largest first (ties: the lower index first, as a stable sort). */
export const topK = (p, k) => Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b).slice(0, k);

export const OPEN_SET_REASONS = {dog: 'not a dog', own: 'a dog breed outside this model', conf: 'low confidence'};

/** dogft.predict.open_set_answer for one image: "none of these" when a signal is below its threshold, with the first reason. */
export function openSetAnswer(logits, imagenetLogits, rule, imagenetClasses) {
  const p = softmax(logits), t = rule.thresholds, sig = {conf: Math.max(...p)};
  let q = null;
  if (imagenetLogits) {
    q = softmax(imagenetLogits);
    sig.dog = rule.dog_classes.reduce((a, i) => a + q[i], 0);
    sig.own = rule.trained_imagenet.reduce((a, i) => a + q[i], 0) / Math.max(sig.dog, 1e-12);
  }
  const fired = Object.keys(OPEN_SET_REASONS).filter(k => k in t && k in sig && sig[k] < t[k]);
  const a = {none_of_these: fired.length > 0, reason: fired.length ? {...OPEN_SET_REASONS, ...(rule.reasons || {})}[fired[0]] : null};
  if (q) { const j = topK(q, 1)[0]; a.imagenet = {top: imagenetClasses ? imagenetClasses[j] : j, prob: q[j], dog: sig.dog, own: sig.own}; }
  return a;
}
