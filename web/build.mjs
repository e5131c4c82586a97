// Build the page into the Python package: ../src/transferkit/server/static/{index.html, app.js, app.css},
// and Swagger UI's files for /docs under static/docs/ (FastAPI's default /docs loads them from a CDN).
import { copyFileSync, mkdirSync } from 'node:fs';
import { build } from 'esbuild';

const out = new URL('../src/transferkit/server/static/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome100', 'firefox100', 'safari15'],
  legalComments: 'eof',
  outfile: `${out}app.js`,
  logLevel: 'info',
});
copyFileSync('src/app.css', `${out}app.css`);
copyFileSync('index.html', `${out}index.html`);

mkdirSync(`${out}docs`, { recursive: true });
const swagger = new URL('node_modules/swagger-ui-dist/', import.meta.url).pathname;
for (const name of ['swagger-ui-bundle.js', 'swagger-ui.css', 'favicon-32x32.png', 'LICENSE']) {
  copyFileSync(`${swagger}${name}`, `${out}docs/${name}`);
}
