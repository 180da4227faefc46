// Call 12345 from the gateway's own /call page in headless Chromium, the way a citizen does,
// and print what happened as one JSON object on stdout. Run by tests/calls/call_webrtc.rs:
//   node tests/browser/webrtc-call.mjs <base url> <wav the microphone plays> <keys> [--hangup-after-order]
// Chromium's fake microphone plays the WAV; the page's keypad sends the keys with insertDTMF
// once the menu is on the screen. With --hangup-after-order it waits for an order number on the
// page and hangs up with the page's button; without, it waits for the gateway to end the call.
import { chromium } from 'playwright-core';

const [base, wav, keys] = process.argv.slice(2);
const hangUp = process.argv.includes('--hangup-after-order');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const out = { heard_frames: 0, connected: false, route: null, order: null, status: null, saying: [], error: null };

const browser = await chromium.launch({
  executablePath,
  args: [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--autoplay-policy=no-user-gesture-required',
    '--no-sandbox',
    '--allow-loopback-in-peer-connection',
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(`${base}/call`);
  await page.click('#call');
  const sayingLog = setInterval(async () => {
    const s = await page.textContent('#saying').catch(() => '');
    if (s && out.saying[out.saying.length - 1] !== s) out.saying.push(s);
  }, 200);
  await page.waitForFunction(() => window.call12345.pc && window.call12345.pc.connectionState === 'connected', null, { timeout: 15000 });
  out.connected = true;
  out.route = await page.waitForFunction(() => window.call12345.route, null, { timeout: 5000 })
    .then((h) => h.jsonValue()).catch(() => null);
  // The greeting: audio energy on the track the gateway sends.
  await page.waitForFunction(() => window.call12345.heard > 5, null, { timeout: 15000 })
    .catch(async (e) => { out.packets = await page.evaluate(() => window.call12345.packets); throw e; });
  // Like a person, press once the menu is on the screen.
  await page.waitForFunction(() => /请按/.test(document.getElementById('saying').textContent), null, { timeout: 15000 });
  for (const k of keys || '') {
    await page.click(`#keypad button[aria-label="按键 ${k}"]`);
    await page.waitForTimeout(400);
  }
  if (hangUp) {
    await page.waitForFunction(() => /工单号/.test(document.getElementById('order').textContent), null, { timeout: 30000 });
    out.order = (await page.textContent('#order')).replace('工单号：', '').trim();
    await page.click('#hangup');
  }
  // Without --hangup-after-order the gateway's side ends the call (a flow, an agent).
  await page.waitForFunction(() => !window.call12345.pc, null, { timeout: 60000 });
  clearInterval(sayingLog);
  out.heard_frames = await page.evaluate(() => window.call12345.heard);
  out.status = await page.textContent('#status');
} catch (e) {
  out.error = String(e && e.message || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
