#!/usr/bin/env python3
"""make_seeds.py - writes the text-like seed corpora of tests/fuzz/:
fuzz_proto (client requests of every action, good and bad), fuzz_http_path
(request targets: files, folders, enums, traversal spellings) and
fuzz_substitute (UI files with placeholders). fuzz_msg's binary batches come
from make_msg_seeds.c. Run from anywhere; rewrites the corpus folders'
seed-* files. Commit what changed."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "q" * 43


def write(harness, name, data):
    folder = os.path.join(HERE, "corpus", harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def proto():
    reqs = {
        "login": {"action": 0, "name": "alice", "password": "secret"},
        "login-pubkey-null": {"action": 0, "name": "alice", "password": "pw", "pubKey": None},
        "register": {"action": 1, "name": "J\u00fcrgen", "password": "pw", "pubKey": "{\"kty\":\"EC\"}"},
        "logout": {"action": 2, "token": TOKEN},
        "message": {"action": 3, "token": TOKEN, "target": "4f9c2a1e-7b3d-4c8e-9a6f-1d2e3f4a5b6c",
                    "message": "hi \"there\"\n\u00e9\u20ac\U0001f600"},
        "message-id": {"action": 3, "token": TOKEN, "target": "u1", "message": "m", "id": "c-1"},
        "authorize": {"action": 4, "token": TOKEN},
        "receipt": {"action": 5, "token": TOKEN, "ids": ["m1", "m2"]},
        "lookup": {"action": 6, "token": TOKEN, "names": ["alice", "B\u00f6b"]},
        "group-create": {"action": 7, "token": TOKEN, "name": "Kletterer \u00e9", "members": ["u1", "u2", "u1"],
                         "id": "r1"},
        "group-add": {"action": 8, "token": TOKEN, "group": "G1", "op": "add", "members": ["u3"]},
        "group-rename": {"action": 8, "token": TOKEN, "group": "G1", "op": "rename", "name": "x\ty"},
        "group-list": {"action": 9, "token": TOKEN, "id": "r2"},
        "group-message": {"action": 10, "token": TOKEN, "group": "G1", "message": "ct", "id": "c1"},
        "login-receipts-delta": {"action": 0, "name": "alice", "password": "pw", "receipts": True,
                                 "presence": "delta"},
        "authorize-presence-none": {"action": 4, "token": TOKEN, "presence": "none"},
        "presence-bad": {"action": 4, "token": TOKEN, "presence": 3},
        "unknown-action": {"action": 99},
        "action-float": {"action": 1.5},
        "action-string": {"action": "1"},
        "action-bool": {"action": True},
        "no-action": {"name": "x"},
        "fill": {"action": 1, "name": "", "password": "x"},
        "pubkey-number": {"action": 1, "name": "a", "password": "x", "pubKey": 7},
        "token-number": {"action": 4, "token": 12},
        "target-number": {"action": 3, "token": TOKEN, "target": 1, "message": "m"},
        "message-number": {"action": 3, "token": TOKEN, "target": "u", "message": 5},
        "nested": {"action": 3, "token": TOKEN, "target": "u", "message": "m",
                   "extra": [{"a": [1, 2, {"b": None}]}]},
    }
    for name, obj in reqs.items():
        write("fuzz_proto", name, json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
    raw = {
        "not-json": "nope",
        "array": "[1,2]",
        "number": "42",
        "empty": "",
        "unterminated": "{\"action\":0",
        "huge-exponent": "{\"action\":1e400}",
        "duplicate-keys": "{\"action\":4,\"action\":0,\"token\":\"t\"}",
        "escaped-nul": "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"hi\\u0000there\"}",
        "escaped-backslash-u0000": "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"a\\\\u0000\"}",
        "surrogates": "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"\\ud83d\\ude00 \\ud800\"}",
        "escapes": "{\"action\":0,\"name\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\",\"password\":\"p\"}",
        "whitespace": " \t\r\n{ \"action\" : 4 , \"token\" : \"t\" } ",
        "trailing-garbage": "{\"action\":4,\"token\":\"t\"} garbage",
        "deep": "[" * 200,
    }
    for name, text in raw.items():
        write("fuzz_proto", name, text)


def http_path():
    # flag byte: 0-1 method (GET, HEAD, POST, get), 4 redirect site,
    # 8 prefix '/', 16 Accept json, 32 Sec-Fetch-Dest empty, 64 no Host;
    # then a byte for the small buffer's size; then the target.
    targets = [
        "/", "/index.html", "/app.js", "/style.css", "/sub/", "/sub", "/sub/data.json",
        "/caf%C3%A9%20menu.txt", "/empty/", "/missing", "/link_in", "/sub_link/data.json",
        "/enums.js", "/enum.js", "/enums.mjs", "/enums.json", "/app.js?x=1#y", "//sub///data.json",
        "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt",
        "/sub/../../secret.txt", "/./index.html", "/.htpasswd", "/.git/config", "/%2egit/config",
        "/sub/.private/key", "/link_out", "/dir_out/secret.txt", "/evil/secret.txt", "/abs_out",
        "/etc/passwd", "/git_link/config", "/key_link", "/..\\secret.txt", "/%5c..%5csecret.txt",
        "/index.html%00.txt", "/%00", "/%c0%ae%c0%ae/secret.txt", "/%e0%80%ae", "/%zz", "/%4",
        "/\x01", "/a\x7f", "index.html", "", "/" + "a/" * 300, "/%25SERVER_PORT%25",
    ]
    for i, t in enumerate(targets):
        write("fuzz_http_path", "%02d" % i, bytes([0, 40]) + t.encode("latin-1"))
    write("fuzz_http_path", "head", bytes([1, 12]) + b"/app.js")
    write("fuzz_http_path", "post", bytes([2, 12]) + b"/")
    write("fuzz_http_path", "redirect", bytes([4, 12]) + b"/a b?\r\nSet-Cookie: x=1")
    write("fuzz_http_path", "enums-json-accept", bytes([16, 12]) + b"/enums.js")
    write("fuzz_http_path", "enums-fetch-dest", bytes([32, 12]) + b"/enums.js")
    write("fuzz_http_path", "slash-flag", bytes([8 | 64, 3]) + b"sub/data.json")


def substitute():
    # flag byte: 1 secure, bits 1-2 address (0 from input, 1 chat.example.org,
    # 2 ::1, 3 none); u32 port; [length byte + address]; then the file.
    page = ("<script>const url = '%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%/ws';"
            "</script> 100% %SERVER_% %%SERVER_PORT%% %SERVER_PORT%SERVER_ADDRESS%")
    write("fuzz_substitute", "page-given-address",
          bytes([0]) + struct.pack("<i", 12345) + bytes([9]) + b"127.0.0.1" + page.encode())
    write("fuzz_substitute", "page-secure", bytes([1 | 2]) + struct.pack("<i", 443) + page.encode())
    write("fuzz_substitute", "page-ipv6", bytes([4]) + struct.pack("<i", -1) + page.encode())
    write("fuzz_substitute", "page-default", bytes([6]) + struct.pack("<i", 0) + page.encode())
    write("fuzz_substitute", "no-placeholder", bytes([2]) + struct.pack("<i", 8080) + b"plain text 50%")
    write("fuzz_substitute", "capital-address",
          bytes([0]) + struct.pack("<i", 1) + bytes([4]) + b"PORT" + b"%SERVER_%SERVER_ADDRESS%%")


if __name__ == "__main__":
    proto()
    http_path()
    substitute()
