// Builds the console's web page with esbuild (make console-web, or
// `node services/console/web/build.mjs` from anywhere):
//   services/console/console/static/  index.html, style.css and app.js, the
//     one bundle of src/main.ts with cytoscape and dagre in it, which the
//     Python console serves; generated, git-ignored, replaced whole each time;
//   services/console/web/dist/test/    test/*.test.ts bundled for node --test.
// Type checking is tsc's (make lint); esbuild only strips the types.

import { copyFile, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import * as esbuild from "esbuild";

const web = dirname(fileURLToPath(import.meta.url));
const statics = join(web, "..", "console", "static");
const tests = join(web, "dist", "test");

await rm(statics, { recursive: true, force: true });
await mkdir(statics, { recursive: true });

await esbuild.build({
  entryPoints: [join(web, "src", "main.ts")],
  outfile: join(statics, "app.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  // The libraries' licence notices stay at the end of the bundle.
  legalComments: "eof",
  logLevel: "warning",
});
await copyFile(join(web, "index.html"), join(statics, "index.html"));
await copyFile(join(web, "style.css"), join(statics, "style.css"));

// An image's build may copy the page without its tests.
const testFiles = (await readdir(join(web, "test")).catch(() => [])).filter((name) => name.endsWith(".test.ts"));
await rm(tests, { recursive: true, force: true });
if (testFiles.length > 0) await esbuild.build({
  entryPoints: testFiles.map((name) => join(web, "test", name)),
  outdir: tests,
  outExtension: { ".js": ".mjs" },
  bundle: true,
  format: "esm",
  platform: "node",
  target: ["node20"],
  packages: "external",
  logLevel: "warning",
});

const app = join(statics, "app.js");
const bytes = (await stat(app)).size;
const gzipped = gzipSync(await readFile(app)).length;
console.log(`console-web: ${app} ${(bytes / 1024).toFixed(0)} KiB (${(gzipped / 1024).toFixed(0)} KiB gzipped); ${testFiles.length} test bundles in ${tests}`);
