// Regenerates the README's screenshots: a 3-person room as one participant sees it, and the
// join form. Usage: cargo build && node scripts/screenshots.mjs   (writes docs/images/*.png)
import { startServer, launchBrowser, openRoomPage, waitFor, inboundStats } from '../tests/browser/lib.mjs';

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
  console.log('wrote docs/images/room.png and docs/images/join-form.png');
} finally {
  await browser.close();
  await server.stop();
}
