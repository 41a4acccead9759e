// Reference dlib-ResNet embeddings from face-api.js (the network's original JS runtime).
//
// stdin:  {"size": 150, "chips": ["<base64 of size*size*3 RGB bytes>", ...]}
// stdout: {"runtime": "...", "embeddings": [[128 floats], ...]}
// Usage:  node scripts/parity/dlib_reference.mjs --node-modules DIR/node_modules
//   where DIR has @vladmandic/face-api@1.7.15, @tensorflow/tfjs@4.22.0 and
//   @tensorflow/tfjs-backend-wasm@4.22.0 installed (no tfjs-node: it needs a
//   native binary download). Called by recognizers_reference.py.
import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const i = process.argv.indexOf('--node-modules');
const nodeModules = path.resolve(i > 0 ? process.argv[i + 1] : 'node_modules');
const require = createRequire(path.join(nodeModules, 'noop.js'));
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
await faceapi.tf.setBackend('wasm');
await faceapi.tf.ready();
const modelDir = path.join(nodeModules, '@vladmandic/face-api/model');
await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);

const embeddings = [];
for (const b64 of input.chips) {
  const bytes = Buffer.from(b64, 'base64');
  const t = faceapi.tf.tensor3d(Float32Array.from(bytes), [input.size, input.size, 3], 'float32');
  const d = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(t);
  t.dispose();
  embeddings.push(Array.from(d));
}
const version = JSON.parse(fs.readFileSync(path.join(nodeModules, '@vladmandic/face-api/package.json'))).version;
const runtime = `@vladmandic/face-api ${version}, tfjs ${faceapi.tf.version_core} backend ${faceapi.tf.getBackend()}, node ${process.version}`;
process.stdout.write(JSON.stringify({ runtime, embeddings }));
