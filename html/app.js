/* app.js - the minimal web UI: log in or register, see who is online, send
   and receive plain-text messages.  The server fills in the placeholders
   below; Requests and Responses come from enums.js, loaded first.
   Every string from the server or a user is shown with textContent. */
(function () {
  "use strict";

  var SERVER_URL = "%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%";
  var TOKEN_KEY = "qms.token";
  var NAME_KEY = "qms.username";

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    status: $("status"), error: $("error"),
    loginForm: $("login-form"), name: $("name"), password: $("password"),
    register: $("register"), loginButton: $("login-button"),
    chat: $("chat"), me: $("me"), logout: $("logout"),
    users: $("users"), messages: $("messages"),
    sendForm: $("send-form"), message: $("message"), send: $("send")
  };

  var ws = null;
  var retryMs = 1000;
  var users = [];           // [{id, name, publicKey}] as the server sent them
  var selected = null;      // id of the user we write to

  // An IPv6 server address needs brackets inside a URL.
  function serverUrl() {
    var m = /^(wss?):\/\/(.*):(\d+)$/.exec(SERVER_URL);
    if (m && m[2].indexOf(":") !== -1 && m[2].charAt(0) !== "[")
      return m[1] + "://[" + m[2] + "]:" + m[3];
    return SERVER_URL;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function setStatus(text) { ui.status.textContent = text; }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function send(obj) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError("Not connected to the server. Retrying…");
      return false;
    }
    ws.send(JSON.stringify(obj));
    return true;
  }

  // ---- views -------------------------------------------------------------

  function showLogin() {
    ui.chat.hidden = true;
    ui.loginForm.hidden = false;
    users = [];
    selected = null;
    ui.messages.textContent = "";
    renderUsers();
  }

  function showChat() {
    ui.loginForm.hidden = true;
    ui.chat.hidden = false;
    ui.password.value = "";
    ui.me.textContent = sessionStorage.getItem(NAME_KEY) || "";
  }

  function nameOf(id) {
    for (var i = 0; i < users.length; i++)
      if (users[i].id === id) return users[i].name;
    return "someone offline";
  }

  function renderUsers() {
    var me = sessionStorage.getItem(NAME_KEY);
    ui.users.textContent = "";
    if (selected !== null && !users.some(function (u) { return u.id === selected; }))
      selected = null;      // they went offline
    users.forEach(function (u) {
      var li = document.createElement("li");
      if (u.name === me) {
        li.className = "self";
        li.textContent = u.name + " (you)";
      } else {
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = u.name;
        b.setAttribute("aria-pressed", String(u.id === selected));
        b.addEventListener("click", function () {
          selected = u.id;
          renderUsers();
          ui.message.focus();
        });
        li.appendChild(b);
      }
      ui.users.appendChild(li);
    });
    var can = selected !== null;
    ui.message.disabled = !can;
    ui.send.disabled = !can;
    ui.message.placeholder = can ? "Message to " + nameOf(selected) : "Select a user to write to";
  }

  function addMessage(who, text, mine) {
    var li = document.createElement("li");
    if (mine) li.className = "mine";
    var label = document.createElement("span");
    label.className = "who";
    label.textContent = (mine ? "to " : "from ") + who + " · " +
      new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.appendChild(label);
    li.appendChild(document.createTextNode(text));
    ui.messages.appendChild(li);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function endSession(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(NAME_KEY);
    showLogin();
    if (reason) showError(reason);
  }

  // ---- server events -----------------------------------------------------

  function onEvent(msg) {
    // Every error text the server sends is shown as it is.
    if (typeof msg.error === "string" && msg.error) showError(msg.error);

    switch (msg.event) {
      case Responses.LoginEvent:
        if (msg.valid && typeof msg.token === "string") {
          sessionStorage.setItem(TOKEN_KEY, msg.token);
          sessionStorage.setItem(NAME_KEY, String(msg.username || ui.name.value));
          showError("");
          showChat();
          users = Array.isArray(msg.users) ? msg.users : [];
          renderUsers();
        }
        break;
      case Responses.AuthorizationEvent:
        if (msg.valid) showChat();
        break;
      case Responses.InvalidUserEvent:
        if (token())
          endSession(msg.error || "Your session has ended. Please log in again.");
        break;
      case Responses.UserlistChangeEvent:
        users = Array.isArray(msg.users) ? msg.users : [];
        renderUsers();
        break;
      case Responses.MessageEvent:
        if (msg.valid) addMessage(nameOf(msg.sender), String(msg.message), false);
        break;
    }
  }

  // ---- connection --------------------------------------------------------

  function connect() {
    setStatus("Connecting…");
    try {
      ws = new WebSocket(serverUrl());
    } catch (e) {
      setStatus("Offline");
      showError("Cannot connect to " + SERVER_URL + ": " + e.message);
      return;
    }
    ws.addEventListener("open", function () {
      retryMs = 1000;
      setStatus("Connected");
      showError("");
      // After a reload (or a dropped connection) resume the session.
      if (token()) send({ action: Requests.AuthorizeRequest, token: token() });
    });
    ws.addEventListener("message", function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { msg = null; }
      if (msg && typeof msg === "object") onEvent(msg);
      else showError("The server sent a message this page cannot read.");
    });
    ws.addEventListener("close", function () {
      ws = null;
      setStatus("Disconnected, retrying in " + Math.round(retryMs / 1000) + " s");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    });
  }

  // ---- user actions ------------------------------------------------------

  ui.register.addEventListener("change", function () {
    ui.loginButton.textContent = ui.register.checked ? "Create account" : "Log in";
    ui.password.autocomplete = ui.register.checked ? "new-password" : "current-password";
  });

  ui.loginForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    showError("");
    send({
      action: ui.register.checked ? Requests.RegisterRequest : Requests.LoginRequest,
      name: ui.name.value,
      password: ui.password.value
    });
  });

  ui.sendForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = ui.message.value;
    if (selected === null || !text) return;
    if (send({ action: Requests.MessageRequest, token: token(), target: selected, message: text })) {
      addMessage(nameOf(selected), text, true);
      ui.message.value = "";
    }
  });

  ui.logout.addEventListener("click", function () {
    // Offline, the server ends the session by itself when it expires.
    if (token() && ws && ws.readyState === WebSocket.OPEN)
      send({ action: Requests.LogoutRequest, token: token() });
    endSession("");
  });

  // ---- start -------------------------------------------------------------

  if (typeof Requests === "undefined" || typeof Responses === "undefined") {
    setStatus("Offline");
    showError("Could not load enums.js from the server.");
    return;
  }
  if (token()) showChat();
  connect();
})();
