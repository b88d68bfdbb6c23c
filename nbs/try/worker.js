// worker.js: turns a photo file into the model's input off the page's thread, so a huge photo never freezes the tab.
// Message in: {id, file, meta, limits: {maxBytes, maxPixels}, pillowMajor}. Out: {id, input (Float32Array), width, height, ms} or {id, error}.
import {fileProblem, pixelProblem, resizeCrop, toTensor} from './dogft.js';

self.onmessage = async ({data: {id, file, meta, limits, pillowMajor}}) => {
  const t0 = performance.now();
  try {
    const head = new Uint8Array(await file.slice(0, 262144).arrayBuffer()), tail = new Uint8Array(await file.slice(-1024).arrayBuffer());
    const problem = fileProblem(file.size, head, tail, limits);
    if (problem) throw new Error(problem);
    let bitmap;
    try { bitmap = await createImageBitmap(file, {imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none'}); }
    catch (e) { throw new Error('corrupt or truncated image (this browser cannot decode it)'); }
    const {width, height} = bitmap;
    const tooLarge = pixelProblem(width, height, limits.maxPixels);
    if (tooLarge) { bitmap.close(); throw new Error(tooLarge); }
    const canvas = new OffscreenCanvas(width, height), ctx = canvas.getContext('2d', {willReadFrequently: true, alpha: false});
    ctx.fillStyle = '#fff';  // transparent pixels on white, as dogft-data and dogft-predict see them
    ctx.fillRect(0, 0, width, height);
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const img = ctx.getImageData(0, 0, width, height);
    const input = toTensor(resizeCrop({data: img.data, width, height}, meta, pillowMajor), meta);
    self.postMessage({id, input, width, height, ms: performance.now() - t0}, [input.buffer]);
  } catch (e) {
    self.postMessage({id, error: e.message || String(e)});
  }
};
