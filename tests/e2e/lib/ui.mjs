// ui.mjs - steps a person takes in the web UI (html/), for the browser tests.

import assert from "node:assert/strict";
import { waitFor } from "./harness.mjs";

export const PASSWORD = "correct horse battery";

export async function waitConnected(page) {
  await page.locator('body[data-conn="open"]').waitFor({ timeout: 15000 });
}

async function submit(page, name, password, { register, confirm = password } = {}) {
  await waitConnected(page);
  await page.click(register ? "#tab-register" : "#tab-login");
  await page.fill("#name", name);
  await page.fill("#password", password);
  if (register) await page.fill("#confirm", confirm);
  await page.click("#submit");
}

/** Creates the account and waits for the chat view. */
export async function register(page, name, password = PASSWORD) {
  await submit(page, name, password, { register: true });
  await page.locator('body[data-view="chat"]').waitFor({ timeout: 15000 });
}

export async function login(page, name, password = PASSWORD) {
  await submit(page, name, password, { register: false });
  await page.locator('body[data-view="chat"]').waitFor({ timeout: 15000 });
}

/** Submits the form and returns the error text the form shows. */
export async function formErrorOf(page, name, password, options) {
  await page.evaluate(() => { document.getElementById("form-error").textContent = ""; });
  await submit(page, name, password, options);
  await page.locator("#form-error:not(:empty)").waitFor({ timeout: 15000 });
  return (await page.textContent("#form-error")).trim();
}

export function contact(page, name) {
  return page.locator(`#contacts li[data-name="${name}"]`);
}

export async function openConversation(page, name) {
  await contact(page, name).locator("button").click();
  await page.locator("#peer-name", { hasText: name }).waitFor();
}

/** Types the text and presses Enter; waits until it is shown as sent. */
export async function send(page, text) {
  const input = page.locator("#message");
  await waitFor(async () => !(await input.isDisabled()), "an enabled composer");
  await input.fill(text);
  await input.press("Enter");
  await page.locator("#messages li.msg.out .bubble", { hasText: text }).waitFor();
  assert.equal(await input.inputValue(), "", "the composer is cleared after sending");
}

export async function waitIncoming(page, text) {
  await page.locator("#messages li.msg.in .bubble", { hasText: text }).waitFor();
}

export async function unreadOf(page, name) {
  const badge = contact(page, name).locator(".badge");
  return (await badge.count()) ? Number(await badge.textContent()) : 0;
}

export async function safetyNumberWith(page, name) {
  await openConversation(page, name);
  await page.click("#verify");
  await page.locator("#safety span").first().waitFor();
  const digits = (await page.locator("#safety span").allTextContents()).join(" ");
  await page.click("#verify-dialog button[value=close]");
  return digits;
}

/** The requests a page sent, parsed. */
export function sentRequests(page) {
  return page.sentFrames.map((f) => { try { return JSON.parse(f.payload); } catch { return null; } }).filter(Boolean);
}
