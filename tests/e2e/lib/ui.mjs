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

/**
 * Opens the safety-number dialog with `name` and reads both fingerprints:
 * {peer: what the page shows as name's number, mine: as its own}; closes it.
 */
export async function safetyNumbersWith(page, name) {
  await openConversation(page, name);
  await page.click("#verify");
  await page.locator("#verify-dialog[data-ready]").waitFor();
  const read = async (id) => (await page.locator(`#${id} span`).allTextContents()).join(" ");
  const numbers = { peer: await read("fp-peer"), mine: await read("fp-mine") };
  await page.click("#verify-dialog button[value=close]");
  await page.locator("#verify-dialog").waitFor({ state: "hidden" });
  return numbers;
}

/**
 * Opens the dialog, ticks "verified" and closes it: the person compared the
 * numbers. (It also drives the dialog of the client before per-identity
 * numbers, with its one number, so that the hostile-server scenarios can be
 * run against that client to show the attacks.)
 */
export async function markVerified(page, name) {
  await openConversation(page, name);
  await page.click("#verify");
  await page.locator("#verify-dialog[data-ready], #verify-dialog #safety span").first().waitFor();
  await page.check("#verified");
  await page.click("#verify-dialog button[value=close]");
  await page.locator('#peer-trust [data-trust="verified"], #peer-state:has-text("verified")').first().waitFor();
}

/** The trust state shown next to a contact's name in the list ("verified", "unverified", "changed", ...). */
export function trustOf(page, name) {
  return contact(page, name).getAttribute("data-trust");
}

/** The requests a page sent, parsed. */
export function sentRequests(page) {
  return page.sentFrames.map((f) => { try { return JSON.parse(f.payload); } catch { return null; } }).filter(Boolean);
}
