// Submit the 12345 web form in headless Chromium the way a person does, and print what happened
// as one JSON object on stdout. Run by tests/channel_web.rs:
//   node tests/browser/webform.mjs <base url> [--wait-ms N] [--screenshots DIR]
// It first makes a mistake (no district, a bad phone number), checks the errors are shown and the
// input kept, fixes them, attaches a generated PNG, submits, and reads the order number from the
// confirmation page. Then it files an emergency and reads the referral.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';

const args = process.argv.slice(2);
const base = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const waitMs = Number(opt('--wait-ms', '3500'));
const shots = opt('--screenshots', null);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (const b of buf) {
    c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

// A 32x32 RGB PNG: a red square on white, like a photo a citizen might attach.
function makePng(size = 32) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const rows = [];
  for (let y = 0; y < size; y++) {
    const row = Buffer.alloc(1 + size * 3);
    for (let x = 0; x < size; x++) {
      const inside = x > 7 && x < 24 && y > 7 && y < 24;
      row[1 + x * 3] = 255;
      row[2 + x * 3] = inside ? 0 : 255;
      row[3 + x * 3] = inside ? 0 : 255;
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const profile = mkdtempSync(join(tmpdir(), 'gw-chromium-'));
const result = { ok: false };
let browser;
try {
  // A fresh profile directory (the persistent context is Playwright's way to pass one).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
    locale: 'zh-CN',
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(15000);

  await page.goto(base + '/');
  result.lang = await page.getAttribute('html', 'lang');
  result.title = await page.title();
  result.emergency_notice = (await page.locator('aside.emergency').innerText()).includes('110/119/120/122');
  // Every visible control has a label that names it.
  result.unlabelled = await page.$$eval('input:not([type=hidden]), select, textarea', (els) =>
    els
      .filter((e) => !e.closest('.hp'))
      .filter((e) => !document.querySelector(`label[for="${e.id}"]`))
      .map((e) => e.name));
  result.district_options = await page.$$eval('#district option', (os) => os.map((o) => o.value).filter(Boolean));
  result.scroll_width = await page.evaluate(() => document.documentElement.scrollWidth);
  const buttonBox = await page.getByRole('button', { name: '提交诉求' }).boundingBox();
  result.button_height = buttonBox ? buttonBox.height : 0;

  // A first try with mistakes.
  const text = '江汉路1号小区门口的路灯坏了一周，晚上很黑，老人出行不便，请尽快修理。';
  await page.getByLabel('诉求内容').fill(text);
  await page.getByLabel('联系电话').fill('12345');
  await page.waitForTimeout(waitMs);
  if (shots) await page.screenshot({ path: join(shots, 'form.png'), fullPage: true });
  await page.getByRole('button', { name: '提交诉求' }).click();
  await page.waitForLoadState('domcontentloaded');
  result.error_title = await page.title();
  result.error_links = await page.$$eval('.error-summary a', (as) => as.map((a) => a.getAttribute('href')));
  result.kept_text = (await page.getByLabel('诉求内容').inputValue()) === text;
  result.phone_invalid = (await page.getAttribute('#phone', 'aria-invalid')) === 'true';
  if (shots) await page.screenshot({ path: join(shots, 'errors.png'), fullPage: true });

  // Fix them, attach a photo, and send.
  await page.getByLabel('所在区').selectOption({ label: '江汉区' });
  await page.getByLabel('详细地址').fill('江汉路1号');
  await page.getByLabel('联系人').fill('张先生');
  await page.getByLabel('联系电话').fill('138 0013 8000');
  await page.setInputFiles('#photo', { name: 'photo.png', mimeType: 'image/png', buffer: makePng() });
  await page.waitForTimeout(waitMs);
  await page.getByRole('button', { name: '提交诉求' }).click();
  await page.waitForSelector('#order-number');
  result.order_id = await page.getAttribute('#order-number', 'data-order-id');
  result.order_text = (await page.locator('#order-number').innerText()).replace(/\s/g, '');
  result.order_font_px = await page.$eval('#order-number', (e) => parseFloat(getComputedStyle(e).fontSize));
  result.confirmation_title = await page.title();
  result.progress_link = await page.getAttribute('a[href^="/web/status"]', 'href');
  if (shots) await page.screenshot({ path: join(shots, 'confirmation.png'), fullPage: true });

  // An emergency: the referral must come first and be unmissable.
  await page.goto(base + '/');
  await page.getByLabel('诉求内容').fill('楼道里着火了，很多烟，有人被困');
  await page.getByLabel('所在区').selectOption({ label: '武昌区' });
  await page.waitForTimeout(waitMs);
  await page.getByRole('button', { name: '提交诉求' }).click();
  await page.waitForSelector('#order-number');
  result.emergency_order_id = await page.getAttribute('#order-number', 'data-order-id');
  result.referral = await page.locator('.emergency-urgent').innerText();
  if (shots) await page.screenshot({ path: join(shots, 'emergency.png'), fullPage: true });

  // The progress page finds the first order.
  await page.goto(base + result.progress_link);
  result.status_text = await page.locator('.status-now').innerText();
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
