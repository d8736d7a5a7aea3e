"""Chat answers while an admin uploads a 20 MB PDF in the console (issue 13: p95 < 1 s during it).

    .venv/bin/python bench/bench_console_upload.py [--mb 20]

One server process (the real application on loopback, sample policies), an admin signed in with
a one-time link: the admin uploads a PDF of the given size (a policy's text plus a page image,
as scanned policies are), sees its preview and confirms it, while a physician asks a policy
question in the web chat every 100 ms. Prints the chat answer latencies before and during the
upload (p50 / p95 / max) and how long the upload, preview and confirmation took. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402

from fixtures_docs import _pdf_from_objects, _stream  # noqa: E402


def policy_pdf(megabytes: int, pages: int = 40) -> bytes:
    """A ``pages``-page PDF with the 张店 plan's text (CJK, ToUnicode) spread over its pages and a
    page image on each filling it up to size, as a scanned-and-OCRed policy is."""
    import random

    text = (REPO / "knowledge/samples/张店区区域医疗机构组建医疗集团实施方案.txt").read_text(encoding="utf-8")
    lines = ["张店区远程医疗协作管理办法（试行）"] + [line.strip() for line in text.splitlines() if line.strip()]
    chars = sorted({ch for line in lines for ch in line})
    bfchar = b"\n".join(b"<%04X> <%04X>" % (ord(ch), ord(ch)) for ch in chars)
    cmap = (b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            b"/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n1 begincodespacerange\n<0000> <FFFF>\n"
            b"endcodespacerange\n%d beginbfchar\n%s\nendbfchar\nendcmap\n"
            b"CMapName currentdict /CMap defineresource pop\nend\nend" % (len(chars), bfchar))
    side = int((megabytes * 1024 * 1024 / pages) ** 0.5)
    rng = random.Random(7)
    per_page = -(-len(lines) // pages)
    # objects: 1 catalog, 2 pages, 3 font, 4 descendant, 5 descriptor, 6 cmap, then per page: page, content, image
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
               b"<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H "
               b"/DescendantFonts [4 0 R] /ToUnicode 6 0 R >>",
               b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun /CIDToGIDMap /Identity "
               b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor 5 0 R "
               b"/DW 1000 >>",
               b"<< /Type /FontDescriptor /FontName /SimSun /Flags 4 /FontBBox [0 -141 1000 859] "
               b"/ItalicAngle 0 /Ascent 859 /Descent -141 /CapHeight 859 /StemV 80 >>",
               _stream(cmap)]
    kids = []
    for n in range(pages):
        first = len(objects) + 1
        kids.append(b"%d 0 R" % first)
        ops = [b"BT", b"/F1 10 Tf", b"12 TL", b"36 800 Td"]
        ops += [b"<%s> Tj T*" % "".join(f"{ord(ch):04X}" for ch in line).encode()
                for line in lines[n * per_page:(n + 1) * per_page]]
        ops += [b"ET"]
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> "
                       b"/XObject << /Im1 %d 0 R >> >> /Contents %d 0 R >>" % (first + 2, first + 1))
        objects.append(_stream(b"\n".join(ops)))
        objects.append(_stream(rng.randbytes(side * side), b"/Type /XObject /Subtype /Image /Width %d /Height %d "
                                                          b"/ColorSpace /DeviceGray /BitsPerComponent 8" % (side, side)))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), pages)
    return _pdf_from_objects(objects)


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(ordered[-1], 1)}


async def run(megabytes: int) -> dict:
    from aiohttp.test_utils import TestServer

    from bot.config import Settings
    from bot.context import build_context
    from bot.server import create_app
    from handlers.engine import ConversationEngine
    from knowledge.samples import sample_policies
    from storage import repositories as repo
    from storage.directory_import import import_directory
    from web_support import login_link_for

    tmp = Path(tempfile.mkdtemp())
    ctx = build_context(Settings(_env_file=None, data_dir=tmp, log_level="WARNING",
                                 max_upload_bytes=(megabytes + 5) * 1024 * 1024))
    with ctx.sessions.begin() as session:
        import_directory(session, REPO / "storage/samples/directory.yaml", actor="bench")
        repo.get_staff_by_code(session, "admin_zd").telegram_user_id = 91001
        repo.get_staff_by_code(session, "dr_liu_zd").telegram_user_id = 91002
    for path, consortium in sample_policies():
        ctx.kb.ingest_path(path, consortium=consortium)
    engine = ConversationEngine(ctx)
    server = TestServer(create_app(ctx, engine, web_chat=True), host="127.0.0.1")
    await server.start_server()
    ctx.settings.http_port = server.port
    base = str(server.make_url("")).rstrip("/")

    async def signed_in(telegram_id: int) -> tuple[aiohttp.ClientSession, str]:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        token = login_link_for(engine, str(telegram_id))
        page = await (await http.get(f"{base}/login/{token}")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        await http.post(f"{base}/login/{token}", data={"csrf": csrf})
        info = await (await http.get(f"{base}/api/session")).json()
        return http, info["csrf"]

    admin, _ = await signed_in(91001)
    doctor, doctor_csrf = await signed_in(91002)
    pdf = policy_pdf(megabytes)
    latencies: dict[str, list[float]] = {"before": [], "during": []}
    phase = {"now": "before", "stop": False}

    async def ask_forever() -> None:
        while not phase["stop"]:
            started = time.perf_counter()
            res = await doctor.post(f"{base}/api/chat", json={"text": "联席会议多久开一次？"},
                                    headers={"X-CSRF-Token": doctor_csrf})
            await res.read()
            latencies[phase["now"]].append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.1)

    asker = asyncio.create_task(ask_forever())
    await asyncio.sleep(3)
    phase["now"] = "during"
    started = time.perf_counter()
    page = await (await admin.get(f"{base}/admin/documents")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = aiohttp.FormData({"csrf": csrf})
    form.add_field("file", pdf, filename="张店区远程医疗协作管理办法.pdf", content_type="application/pdf")
    preview = await (await admin.post(f"{base}/admin/documents/upload", data=form)).text()
    previewed = time.perf_counter() - started
    token = re.search(r'name="token" value="([^"]+)"', preview)
    confirmed = None
    if token:
        done = await (await admin.post(f"{base}/admin/documents/confirm",
                                       data={"csrf": csrf, "token": token.group(1)})).text()
        confirmed = time.perf_counter() - started
        outcome = re.search(r'<p class="notice">([^<]+)</p>', done)
        outcome = outcome.group(1) if outcome else "?"
    else:
        outcome = re.sub(r"<[^>]+>", " ", preview)[:200]
    phase["stop"] = True
    await asker
    await admin.close()
    await doctor.close()
    await server.close()
    ctx.close()
    return {"pdf_mb": round(len(pdf) / 1024 / 1024, 1), "upload_and_preview_s": round(previewed, 2),
            "upload_to_confirmed_s": round(confirmed, 2) if confirmed else None, "outcome": outcome,
            "chat_before_upload": summary(latencies["before"]), "chat_during_upload": summary(latencies["during"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mb)), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
