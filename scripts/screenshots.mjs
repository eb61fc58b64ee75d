// Regenerates the README's screenshots: the lobby, a 4-person room, the chat and the directory
// (written by the web client's browser test, tests/browser/client.test.mjs, into docs/images/),
// and the broadcast viewer page playing an ffmpeg RTMP push.
// Usage: cargo build && node scripts/screenshots.mjs   (writes docs/images/*.png; needs ffmpeg)
import { spawn, spawnSync } from 'node:child_process';
import { startServer, launchBrowser, openWatchPage, waitFor, inboundStats } from '../tests/browser/lib.mjs';

const clientTest = spawnSync(process.execPath, ['--test', 'tests/browser/client.test.mjs'], {
  stdio: 'inherit',
  env: { ...process.env, ROOMCAST_SCREENSHOT_DIR: 'docs/images' },
});
if (clientTest.status !== 0) {
  console.error('the web client test failed: its screenshots in docs/images/ may be incomplete');
  process.exit(1);
}

const server = await startServer();
const browser = await launchBrowser();
try {
  const encoder = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '60', '-c:a', 'aac',
    '-f', 'flv', `${server.rtmpUrl}/live/keynote`], { stdio: 'ignore' });
  try {
    const watch = await openWatchPage(browser, server.url, 'keynote');
    await waitFor(async () => {
      const video = (await inboundStats(watch)).find((s) => s.kind === 'video' && s.framesDecoded > 30);
      const live = await watch.evaluate(() => document.body.innerText.includes('LIVE'));
      return video && live;
    }, { timeout: 20_000, interval: 200, message: 'the broadcast to play on the watch page' });
    await watch.setViewportSize({ width: 1100, height: 700 });
    await watch.screenshot({ path: 'docs/images/watch.png' });
  } finally {
    encoder.kill('SIGKILL');
  }
  console.log('wrote docs/images/{lobby,room,chat,directory,watch}.png');
} finally {
  await browser.close();
  await server.stop();
}
