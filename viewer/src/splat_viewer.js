// The in-page 3D Gaussian viewer: DA3's Gaussians (SPZ bytes) drawn by Spark on three.js.
// Bundled with esbuild into da3_core/static/splat_viewer.js and inlined into the page with the
// data, so it needs no network: Spark's sort worker and its WASM are inlined in its own build
// (a Blob URL worker, WASM from base64). Build: `cd viewer && npm ci && npm run build`.
//
// World frame: DA3's (OpenCV: x right, y down, z forward). The splats stay in that frame; the
// three.js camera is placed from the reference camera's camera-to-world pose, turned by
// diag(1, -1, -1) (three.js cameras look along -z with y up).
import * as THREE from 'three';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
import { SparkRenderer, SplatMesh, SparkControls, dyno } from '@sparkjsdev/spark';

function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function fail(container, status, message) {
  status.textContent = message;
  container.dataset.state = 'error';
  window.__da3Splat = Object.assign(window.__da3Splat || {}, { error: message });
  console.error('DA3_SPLAT_ERROR ' + message);
}

// A world modifier that multiplies every splat's scales by a live uniform.
function scaleModifier(scale) {
  return dyno.dynoBlock({ gsplat: dyno.Gsplat }, { gsplat: dyno.Gsplat }, ({ gsplat }) => {
    const { scales } = dyno.splitGsplat(gsplat).outputs;
    return { gsplat: dyno.combineGsplat({ gsplat, scales: dyno.mul(scales, scale) }) };
  });
}

/**
 * Mount the viewer in `container`.
 * @param {HTMLElement} container
 * @param {string} splatBase64 SPZ bytes (gzip inside), base64.
 * @param {object} options {count, camera: {position, quaternion (xyzw), up, target, fovY, near, far},
 *   frustums: flat [x0,y0,z0,x1,y1,z1,...] world segments, frustumColors: flat rgb 0..1 per end point,
 *   sceneSize, splatScale, showCameras, background, mode: 'orbit' | 'fly'}
 */
export function mount(container, splatBase64, options = {}) {
  const opts = Object.assign({ splatScale: 1, showCameras: true, background: '#0e1117', mode: 'orbit', sceneSize: 1 }, options);
  const t0 = performance.now();
  window.__da3Splat = { state: 'loading', t0 };
  const status = document.createElement('div');
  status.className = 'da3-status';
  container.appendChild(status);
  status.textContent = 'Loading ' + (opts.count || 0).toLocaleString() + ' Gaussians…';

  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  } catch (err) { // three.js needs WebGL2, as Spark does
    fail(container, status, 'WebGL2 is not available in this browser: ' + err.message);
    return null;
  }
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const width = container.clientWidth || 800;
  const height = container.clientHeight || 600;
  renderer.setSize(width, height);
  container.appendChild(renderer.domElement);
  renderer.domElement.tabIndex = 0; // keyboard (fly: WASD, arrows) goes to the canvas once clicked

  const scene = new THREE.Scene();
  scene.background = new THREE.Color(opts.background);
  const cam = opts.camera || {};
  const camera = new THREE.PerspectiveCamera(cam.fovY || 50, width / height, cam.near || 0.01, cam.far || 1000);
  if (cam.up) camera.up.fromArray(cam.up);

  let dirty = true;
  const requestRender = () => { dirty = true; };
  const spark = new SparkRenderer({ renderer, onDirty: requestRender });
  scene.add(spark);

  // Camera frustums (world segments, one colour per camera).
  const cameraObjects = [];
  if (opts.frustums && opts.frustums.length) {
    const geom = new THREE.BufferGeometry();
    geom.setAttribute('position', new THREE.Float32BufferAttribute(opts.frustums, 3));
    const coloured = !!opts.frustumColors && opts.frustumColors.length === opts.frustums.length;
    if (coloured) geom.setAttribute('color', new THREE.Float32BufferAttribute(opts.frustumColors, 3));
    const lines = new THREE.LineSegments(geom, new THREE.LineBasicMaterial({ vertexColors: coloured, color: 0xffffff }));
    scene.add(lines);
    cameraObjects.push(lines);
  }

  // Home: the reference camera.
  const home = {
    position: new THREE.Vector3().fromArray(cam.position || [0, 0, 0]),
    quaternion: new THREE.Quaternion().fromArray(cam.quaternion || [0, 0, 0, 1]),
    target: new THREE.Vector3().fromArray(cam.target || [0, 0, 1]),
  };

  const orbit = new OrbitControls(camera, renderer.domElement);
  orbit.enableDamping = false;
  orbit.addEventListener('change', requestRender);
  const fly = new SparkControls({ canvas: renderer.domElement });
  fly.fpsMovement.moveSpeed = Math.max(1e-3, opts.sceneSize * 0.25);
  let mode = opts.mode === 'fly' ? 'fly' : 'orbit';

  function summary() {
    return splatCount.toLocaleString() + (splatCount === 1 ? ' Gaussian · ' : ' Gaussians · ') + hint();
  }

  function hint() {
    return mode === 'orbit' ? 'drag to orbit, scroll to zoom, right-drag to pan'
      : 'click the view, then WASD / arrows to fly (Shift: faster), drag to look, scroll to move';
  }

  function applyMode() {
    orbit.enabled = mode === 'orbit';
    fly.fpsMovement.enable = mode === 'fly';
    fly.pointerControls.enable = mode === 'fly';
    // Both listen all the time: forget what the other mode's input left behind.
    const pc = fly.pointerControls;
    pc.rotating = null; pc.sliding = null; pc.lastDown = null; pc.scroll.set(0, 0, 0);
    pc.rotateVelocity.set(0, 0, 0); pc.moveVelocity.set(0, 0, 0);
    fly.fpsMovement.keydown = {}; fly.fpsMovement.keycode = {};
    if (ready) status.textContent = summary();
    if (mode === 'orbit') {
      // Orbit about the point straight ahead, as far as the target was.
      const dist = Math.max(1e-6, camera.position.distanceTo(orbit.target));
      const ahead = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion).multiplyScalar(dist);
      orbit.target.copy(camera.position).add(ahead);
      orbit.update();
    } else {
      fly.lastTime = performance.now();
    }
    requestRender();
  }

  function resetView() {
    camera.position.copy(home.position);
    camera.quaternion.copy(home.quaternion);
    orbit.target.copy(home.target);
    camera.updateMatrixWorld();
    if (mode === 'orbit') orbit.update();
    camera.quaternion.copy(home.quaternion); // exactly the reference camera, whatever orbit computed
    requestRender();
  }

  const scaleUniform = dyno.dynoFloat(opts.splatScale);
  let mesh = null;
  let meshIn = false; // the mesh is decoded and in the scene
  let ready = false;
  let lastRender = 0;
  let splatCount = 0;

  const api = {
    setSplatScale(s) { scaleUniform.value = Math.max(0.01, +s); if (mesh) mesh.updateVersion(); requestRender(); },
    setCamerasVisible(v) { cameraObjects.forEach((o) => { o.visible = !!v; }); requestRender(); },
    setMode(m) { mode = m === 'fly' ? 'fly' : 'orbit'; applyMode(); },
    get mode() { return mode; },
    resetView,
    get splatCount() { return splatCount; },
    get ready() { return ready; },
    // True when nothing is left to draw: no pending frame, no sort running, none drawn lately
    // (the viewer draws on demand), so a screenshot shows the settled picture.
    get settled() { return ready && !dirty && !spark.sorting && !spark.sortDirty && performance.now() - lastRender > 300; },
    camera,
  };

  function loop() {
    requestAnimationFrame(loop);
    let moved = false;
    if (mode === 'fly') moved = fly.update(camera);
    else if (orbit.enableDamping) moved = orbit.update();
    const now = performance.now();
    // Spark asks for a frame when its sort is done (onDirty); until the first frame with the
    // splats is drawn, also render now and then in case a request was missed.
    if (!(dirty || moved || (meshIn && !ready && now - lastRender > 250))) return;
    lastRender = now;
    dirty = false;
    const drawsSplats = meshIn && spark.activeSplats > 0;
    renderer.render(scene, camera);
    if (!ready && drawsSplats) {
      // Reading one pixel waits until the GPU (or SwiftShader) has really drawn the frame.
      const gl = renderer.getContext();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
      ready = true;
      const ms = performance.now() - t0;
      container.dataset.state = 'ready';
      container.dataset.splats = String(splatCount);
      window.__da3Splat = Object.assign(window.__da3Splat, { state: 'ready', readyMs: ms, splats: splatCount, readyAt: performance.now() });
      status.textContent = summary();
      console.log('DA3_SPLAT_READY ' + ms.toFixed(1));
    }
  }

  window.addEventListener('resize', () => {
    const w = container.clientWidth, h = container.clientHeight;
    camera.aspect = w / h; camera.updateProjectionMatrix(); renderer.setSize(w, h); requestRender();
  });

  let bytes;
  try {
    bytes = base64ToBytes(splatBase64);
  } catch (err) {
    fail(container, status, 'Could not read the Gaussians: ' + err.message);
    return null;
  }
  splatCount = opts.count || 0;
  resetView();
  applyMode();
  api.setCamerasVisible(opts.showCameras);
  try {
    mesh = new SplatMesh({ fileBytes: bytes, fileType: 'spz', fileName: 'da3.spz' });
  } catch (err) {
    fail(container, status, 'Could not load the Gaussians: ' + err.message);
    return null;
  }
  mesh.worldModifier = scaleModifier(scaleUniform);
  mesh.initialized.then(() => {
    mesh.updateGenerator();
    scene.add(mesh);
    meshIn = true;
    window.__da3Splat.decodedAt = performance.now();
    requestRender();
  }).catch((err) => fail(container, status, 'Could not load the Gaussians: ' + (err && err.message ? err.message : err)));
  loop();
  return api;
}
