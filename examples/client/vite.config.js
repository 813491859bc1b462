import { defineConfig } from 'vite';

// No React plugin: Vite's esbuild compiles JSX with the automatic runtime,
// which is all this demo needs (the dev server reloads the page on change).
export default defineConfig({
  base: './', // dist/ works from any path, e.g. `python3 -m http.server -d dist`
  esbuild: { jsx: 'automatic' },
  server: { host: '127.0.0.1', port: 5173 },
  preview: { host: '127.0.0.1', port: 4173 },
});
