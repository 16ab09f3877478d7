#!/usr/bin/env python3
"""Where the storefront's wasm bytes are: a small `twiggy top` over the name section.

Usage: KEEP_NAMES=1 web/build.sh && web/wasm_sizes.py web/dist/posthuman_web_bg.wasm [N]
Prints the sections, the N largest functions (default 40), code by leading crate, and code
by serde_json reader (each reader type instantiates every deserializer again).
"""
import collections
import re
import sys


def leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def parse(path):
    data = open(path, "rb").read()
    i, sections, imported, code, names = 8, [], 0, [], {}
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        body = data[i : i + size]
        if sid == 0:
            nl, j = leb(body, 0)
            name = body[j : j + nl].decode()
            sections.append(("custom:" + name, size))
            j += nl
            while name == "name" and j < len(body):
                sub = body[j]
                ss, j = leb(body, j + 1)
                if sub == 1:  # function names
                    cnt, k = leb(body[j : j + ss], 0)
                    sb = body[j : j + ss]
                    for _ in range(cnt):
                        idx, k = leb(sb, k)
                        ln, k = leb(sb, k)
                        names[idx] = sb[k : k + ln].decode("utf8", "replace")
                        k += ln
                j += ss
        else:
            sections.append((sid, size))
            if sid == 2:  # imports: imported functions come first in the index space
                cnt, k = leb(body, 0)
                for _ in range(cnt):
                    for _ in range(2):
                        ln, k = leb(body, k)
                        k += ln
                    kind = body[k]
                    k += 1
                    if kind == 0:
                        _, k = leb(body, k)
                        imported += 1
                    elif kind in (1, 2):
                        k += 1 if kind == 1 else 0
                        flags = body[k]
                        _, k = leb(body, k + 1)
                        if flags & 1:
                            _, k = leb(body, k)
                    elif kind == 3:
                        k += 2
            if sid == 10:  # code
                cnt, k = leb(body, 0)
                for f in range(cnt):
                    ln, k2 = leb(body, k)
                    code.append((imported + f, ln + k2 - k))
                    k = k2 + ln
        i += size
    return sections, code, names


def main():
    sections, code, names = parse(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    clean = lambda n: re.sub(r"::h[0-9a-f]{16}$", "", re.sub(r"\[[0-9a-f]+\]", "", n))
    rows = sorted(((s, clean(names.get(f, f"func{f}"))) for f, s in code), reverse=True)
    print("sections (id or name, bytes):", sections)
    print(f"{len(code)} functions, {sum(s for s, _ in rows)} bytes of code\n")
    for s, n in rows[:top]:
        print(f"{s:8d} {n[:150]}")
    by_crate, by_reader = collections.Counter(), collections.Counter()
    for s, n in rows:
        m = re.match(r"[<&]*(?:mut )?([a-zA-Z_0-9]+)", n)
        by_crate[m.group(1) if m else "?"] += s
        for reader in ("StrRead", "SliceRead", "IoRead", "value::de", "ContentDeserializer"):
            if reader in n:
                by_reader[reader] += s
    print("\ncode by leading crate:")
    for k, v in by_crate.most_common(20):
        print(f"{v:8d} {k}")
    print("\ncode by serde_json reader / deserializer:")
    for k, v in by_reader.most_common():
        print(f"{v:8d} {k}")


if __name__ == "__main__":
    main()
