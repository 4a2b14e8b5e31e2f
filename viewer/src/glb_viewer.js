// The in-page full-density viewer: a GLB (points + camera wireframes, or triangle meshes)
// in three.js. Meshes are lit by a hemisphere light and a light at the camera (their vertex
// colours shaded), both sides drawn.
// Bundled with esbuild into da3_core/static/glb_viewer.js and inlined into the page,
// so it needs no network. Build: `cd viewer && npm ci && npm run build`.
import * as THREE from 'three';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';

function base64ToArrayBuffer(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

export function mount(container, glbBase64, options = {}) {
  const opts = Object.assign({ pointSize: 2, background: '#0e1117', showCameras: true }, options);
  const status = document.createElement('div');
  status.className = 'da3-status';
  container.appendChild(status);

  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  } catch (err) {
    status.textContent = 'WebGL is not available in this browser: ' + err.message;
    container.dataset.state = 'error';
    return null;
  }
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const width = container.clientWidth || 800;
  const height = container.clientHeight || 600;
  renderer.setSize(width, height);
  container.appendChild(renderer.domElement);

  const scene = new THREE.Scene();
  scene.background = new THREE.Color(opts.background);
  const camera = new THREE.PerspectiveCamera(50, width / height, 0.001, 1e6);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = true;

  const pointMaterials = [];
  const cameraObjects = [];
  let home = null;
  let pointCount = 0;
  let faceCount = 0;
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 1.6));
  const headLight = new THREE.DirectionalLight(0xffffff, 1.4);
  camera.add(headLight);
  scene.add(camera);

  // Drawn only when something changed (the controls moved, damping still settling, a setter
  // ran): a still view costs no CPU or battery (with software WebGL it kept a core busy).
  let dirty = true;
  const redraw = () => { dirty = true; };
  controls.addEventListener('change', redraw);
  function render() { renderer.render(scene, camera); }
  function animate() {
    requestAnimationFrame(animate);
    const moved = controls.update();
    if (!moved && !dirty) return;
    dirty = false;
    render();
    container.dataset.frames = String(Number(container.dataset.frames || 0) + 1);
  }

  function frame(object) {
    const box = new THREE.Box3().setFromObject(object);
    const sphere = box.getBoundingSphere(new THREE.Sphere());
    const r = Math.max(sphere.radius, 1e-6);
    const dist = r / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2));
    // Look along -z (glTF forward after the OpenCV -> glTF flip), so the first camera's view.
    camera.position.copy(sphere.center).add(new THREE.Vector3(0, 0, dist * 0.9));
    camera.near = dist / 1000; camera.far = dist * 100; camera.updateProjectionMatrix();
    controls.target.copy(sphere.center);
    home = { position: camera.position.clone(), target: sphere.center.clone() };
    controls.update();
  }

  const api = {
    setPointSize(px) { pointMaterials.forEach((m) => { m.size = px; m.needsUpdate = true; }); redraw(); },
    setCamerasVisible(v) { cameraObjects.forEach((o) => { o.visible = v; }); redraw(); },
    resetView() { if (home) { camera.position.copy(home.position); controls.target.copy(home.target); controls.update(); redraw(); } },
    get pointCount() { return pointCount; },
  };

  new GLTFLoader().parse(base64ToArrayBuffer(glbBase64), '', (gltf) => {
    scene.add(gltf.scene);
    gltf.scene.traverse((obj) => {
      if (obj.isPoints) {
        const m = new THREE.PointsMaterial({ size: opts.pointSize, sizeAttenuation: false, vertexColors: true });
        obj.material = m;
        pointMaterials.push(m);
        pointCount += obj.geometry.attributes.position.count;
      } else if (obj.isLine || obj.isLineSegments) {
        cameraObjects.push(obj);
      } else if (obj.isMesh) {
        const g = obj.geometry;
        if (!g.attributes.normal) g.computeVertexNormals();
        obj.material = new THREE.MeshLambertMaterial({
          vertexColors: Boolean(g.attributes.color), color: g.attributes.color ? 0xffffff : 0xb0b8c8, side: THREE.DoubleSide,
        });
        faceCount += g.index ? g.index.count / 3 : g.attributes.position.count / 3;
      }
    });
    api.setCamerasVisible(opts.showCameras);
    frame(gltf.scene);
    const what = faceCount > 0
      ? faceCount.toLocaleString() + ' triangles' + (pointCount > 0 ? ', ' + pointCount.toLocaleString() + ' points' : '')
      : pointCount.toLocaleString() + ' points';
    status.textContent = what + ' · drag to orbit, scroll to zoom, right-drag to pan';
    container.dataset.state = 'ready';
    container.dataset.points = String(pointCount);
    container.dataset.faces = String(faceCount);
    animate();
  }, (err) => {
    status.textContent = 'Could not read the GLB: ' + (err && err.message ? err.message : err);
    container.dataset.state = 'error';
  });

  window.addEventListener('resize', () => {
    const w = container.clientWidth, h = container.clientHeight;
    camera.aspect = w / h; camera.updateProjectionMatrix(); renderer.setSize(w, h); redraw();
  });
  return api;
}
