"""Builders for small document fixtures (PDF, DOCX) used by the reader tests.

Everything is generated in memory, offline and fast: PDFs are written by hand (a few objects
with a correct xref table), DOCX files with python-docx.
"""

from __future__ import annotations

import io
import zipfile


def _pdf_from_objects(objects: list[bytes]) -> bytes:
    """Assemble a PDF from object bodies (object 1 must be the catalog) with a valid xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def _stream(content: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(content), extra) + content + b"\nendstream"


def _pdf_escape(text: str) -> bytes:
    raw = text.encode("latin-1")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def make_text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with a real text layer: one page per entry, ASCII lines set in Helvetica."""
    page_count = len(pages)
    # Objects: 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(page_count))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, page_count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 720 Td"]
        for line in lines:
            ops.append(b"(%s) Tj T*" % _pdf_escape(line))
        ops.append(b"ET")
        content = b"\n".join(ops)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(_stream(content))
    return _pdf_from_objects(objects)


def make_cjk_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with Chinese text: Type0/Identity-H font (not embedded) + ToUnicode CMap.

    CIDs are simply the Unicode code points, so the CMap is a short bfchar list.
    """
    chars = sorted({ch for line in lines for ch in line})
    bfchar = b"\n".join(b"<%04X> <%04X>" % (ord(ch), ord(ch)) for ch in chars)
    cmap = (
        b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        b"/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        b"1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        b"%d beginbfchar\n%s\nendbfchar\n"
        b"endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend" % (len(chars), bfchar)
    )
    ops = [b"BT", b"/F1 12 Tf", b"16 TL", b"72 720 Td"]
    for line in lines:
        ops.append(b"<%s> Tj T*" % "".join(f"{ord(ch):04X}" for ch in line).encode())
    ops.append(b"ET")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        _stream(b"\n".join(ops)),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H "
        b"/DescendantFonts [6 0 R] /ToUnicode 8 0 R >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun /CIDToGIDMap /Identity "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor 7 0 R /DW 1000 >>",
        b"<< /Type /FontDescriptor /FontName /SimSun /Flags 4 /FontBBox [0 -141 1000 859] "
        b"/ItalicAngle 0 /Ascent 859 /Descent -141 /CapHeight 859 /StemV 80 >>",
        _stream(cmap),
    ]
    return _pdf_from_objects(objects)


def make_blank_pdf(page_count: int = 2) -> bytes:
    """A PDF whose pages have no text at all (what a scan without OCR looks like to us)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(page_count):
        writer.add_blank_page(width=595, height=842)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_encrypted_pdf(source: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    """Re-save ``source`` encrypted. An empty user password means "opens without a password"."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(source)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_docx(
    *,
    title_paragraph: str | None = None,
    core_title: str | None = None,
    paragraphs_before: list[str] = (),
    table: list[list[str]] | None = None,
    merge_first_row: bool = False,
    paragraphs_after: list[str] = (),
) -> bytes:
    """A DOCX: optional Title-styled paragraph, paragraphs, one table, more paragraphs."""
    import docx

    doc = docx.Document()
    if core_title is not None:
        doc.core_properties.title = core_title
    if title_paragraph is not None:
        doc.add_heading(title_paragraph, level=0)  # level 0 = "Title" style
    for text in paragraphs_before:
        doc.add_paragraph(text)
    doc.add_paragraph("")  # an empty paragraph must not become a block
    if table:
        t = doc.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, text in enumerate(row):
                t.cell(r, c).text = text
        if merge_first_row:
            merged = t.cell(0, 0).merge(t.cell(0, 1))
            merged.text = table[0][0]
    for text in paragraphs_after:
        doc.add_paragraph(text)
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def replace_zip_member(data: bytes, member: str, new_content: bytes) -> bytes:
    """Copy a zip (e.g. a DOCX), replacing one member's bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, new_content if info.filename == member else src.read(info))
    return buf.getvalue()


def make_ole_file(*, encrypted: bool) -> bytes:
    """Bytes that look like an OLE compound file: an old .doc, or a password-protected .docx."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    directory = ("EncryptionInfo" if encrypted else "WordDocument").encode("utf-16-le")
    return header + directory + b"\x00" * 1024
