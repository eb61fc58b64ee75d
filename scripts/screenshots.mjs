// Regenerates the README's screenshots: a 3-person room as one participant sees it, the join
// form, and the broadcast viewer page playing an ffmpeg RTMP push.
// Usage: cargo build && node scripts/screenshots.mjs   (writes docs/images/*.png; needs ffmpeg)
import { spawn } from 'node:child_process';
import { startServer, launchBrowser, openRoomPage, openWatchPage, waitFor, inboundStats } from '../tests/browser/lib.mjs';

const server = await startServer();
const browser = await launchBrowser();
try {
  const room = 'demo';
  const pages = [];
  for (const name of ['Ada', 'Grace', 'Linus']) pages.push(await openRoomPage(browser, server.url, room, name));
  const viewer = pages[0];
  await waitFor(async () => {
    const videos = (await inboundStats(viewer)).filter((s) => s.kind === 'video' && s.framesDecoded > 10);
    if (videos.length < 2) throw new Error(`${videos.length} videos decoding`);
    return true;
  }, { timeout: 20_000, interval: 200, message: 'two remote videos to play' });
  await viewer.setViewportSize({ width: 1100, height: 700 });
  await viewer.screenshot({ path: 'docs/images/room.png' });
  const form = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await form.goto(server.url + '/');
  await form.screenshot({ path: 'docs/images/join-form.png' });
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
  console.log('wrote docs/images/room.png, docs/images/join-form.png and docs/images/watch.png');
} finally {
  await browser.close();
  await server.stop();
}
