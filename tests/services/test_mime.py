"""Outgoing message bytes: parts, headers, tracked links and the open pixel."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from services.mime import OutgoingMessage, build

UNSUBSCRIBE_URL = "https://t.example.com/u/" + "x" * 140  # longer than a header line
UNSUBSCRIBE_MAILTO = "mailto:unsubscribe+tok123@example.com"
HTML = (
    "<html><body><p>Hi Jordan,</p>"
    '<p><a href="https://acme.example.com/pricing?plan=pro&amp;seats=5">pricing</a>'
    " <A HREF='http://acme.example.com/about'>about</A>"
    ' <a class="btn" href=https://acme.example.com/bare>bare</a>'
    ' <a href="mailto:sales@example.com">write</a>'
    ' <a href="tel:+123">call</a>'
    ' <a href="#top">top</a>'
    ' <a title="see href=\'https://not.a/link\'" href="https://acme.example.com/t">t</a></p>'
    '<link rel="stylesheet" href="https://acme.example.com/style.css">'
    "</body></html>"
)
TEXT = "Hi Jordan,\nsee https://acme.example.com/pricing\n"


def _message(**changes: object) -> OutgoingMessage:
    message = OutgoingMessage(
        from_address="ana@example.com",
        from_name="Ana Smith",
        to_address="jordan@acme.example.com",
        subject="Quick question",
        html=HTML,
        text=TEXT,
        message_id="<0193a1b2@example.com>",
        return_path="b+tok@bounces.example.com",
        list_unsubscribe_url=UNSUBSCRIBE_URL,
        list_unsubscribe_mailto=UNSUBSCRIBE_MAILTO,
        open_url="https://t.example.com/o/abc?x=1&y=2",
        click_url=lambda url: "https://t.example.com/c/sig?u=" + url,
        date=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )
    return dataclasses.replace(message, **changes)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _content(part: EmailMessage) -> str:
    return part.get_content().replace("\r\n", "\n")


def _raw_header(raw: bytes, name: str) -> str:
    """The header's value as written, unfolded (RFC 5322 §2.2.3), never decoded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    values = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith(name + ":")]
    assert len(values) <= 1
    return values[0] if values else ""


def test_both_bodies_make_a_multipart_alternative_with_text_first():
    parsed = _parse(build(_message()))

    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content_charset() == "utf-8"
    assert _content(text) == TEXT
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.defects == [] and text.defects == [] and html.defects == []


@pytest.mark.parametrize("missing", ["html", "text"])
def test_one_body_makes_a_single_part_message(missing: str):
    parsed = _parse(build(_message(**{missing: None})))

    assert not parsed.is_multipart()
    assert parsed.get_content_type() == ("text/plain" if missing == "html" else "text/html")


def test_a_message_without_any_body_is_refused():
    with pytest.raises(ValueError):
        build(_message(html=None, text=None))


def test_a_non_ascii_subject_and_display_name_read_back_as_written():
    subject = "Grüße aus München — ein Betreff, der lang genug ist, um gefaltet zu werden 🐧"
    raw = build(
        _message(
            subject=subject,
            from_name="José Núñez, Ventas",
            list_unsubscribe_url="https://t.example.com/u/1",
        )
    )
    parsed = _parse(raw)

    assert parsed["Subject"] == subject
    (sender,) = parsed["From"].addresses
    assert sender.display_name == "José Núñez, Ventas"
    assert sender.addr_spec == "ana@example.com"
    assert raw.isascii()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n"))


@pytest.mark.parametrize("name", ['Ana "the closer" Smith', "Smith, Ana", "=?utf-8?q?x?="])
def test_an_ascii_display_name_with_specials_reads_back_as_written(name: str):
    (sender,) = _parse(build(_message(from_name=name)))["From"].addresses

    assert sender.display_name == name


def test_an_international_recipient_domain_is_written_in_punycode():
    parsed = _parse(build(_message(to_address="jordan@bücher.example")))

    assert parsed["To"] == "jordan@xn--bcher-kva.example"


def test_non_ascii_and_long_lined_bodies_read_back_as_written():
    text = "Ünïcödé " * 40 + "\n" + "plain line\n"
    html = "<p>" + "日本語のテキスト" * 60 + "</p>"
    parsed = _parse(build(_message(text=text, html=html, open_url=None)))

    text_part, html_part = parsed.iter_parts()
    assert _content(text_part) == text
    assert _content(html_part) == html + "\n"


def test_the_pixel_and_the_rewritten_links_are_in_the_html_part_only():
    text, html = _parse(build(_message())).iter_parts()
    html_body, text_body = _content(html), _content(text)

    pixel = (
        '<img src="https://t.example.com/o/abc?x=1&amp;y=2" width="1" height="1" alt=""'
        ' style="display:none"></body>'
    )
    assert pixel in html_body
    click = "https://t.example.com/c/sig?u="
    # The href is unescaped before click_url sees it and escaped again when written.
    assert f'href="{click}https://acme.example.com/pricing?plan=pro&amp;seats=5"' in html_body
    assert f'HREF="{click}http://acme.example.com/about"' in html_body
    assert f'href="{click}https://acme.example.com/bare"' in html_body
    assert f'href="{click}https://acme.example.com/t"' in html_body
    assert "t.example.com" not in text_body
    assert text_body == TEXT


def test_mailto_tel_anchor_and_stylesheet_links_are_not_rewritten():
    _, html = _parse(build(_message())).iter_parts()
    html_body = _content(html)

    assert '<a href="mailto:sales@example.com">' in html_body
    assert '<a href="tel:+123">' in html_body
    assert '<a href="#top">' in html_body
    assert '<link rel="stylesheet" href="https://acme.example.com/style.css">' in html_body
    assert "title=\"see href='https://not.a/link'\"" in html_body


def test_without_a_body_tag_the_pixel_is_appended():
    parsed = _parse(build(_message(html="<p>hello</p>", text=None)))

    assert _content(parsed).startswith('<p>hello</p><img src="https://t.example.com/o/abc')


def test_without_tracking_the_html_is_sent_as_written():
    parsed = _parse(build(_message(text=None, open_url=None, click_url=None)))

    assert _content(parsed) == HTML + "\n"


def test_the_list_unsubscribe_headers_are_exact():
    raw = build(_message())

    assert _raw_header(raw, "List-Unsubscribe") == f"<{UNSUBSCRIBE_URL}>, <{UNSUBSCRIBE_MAILTO}>"
    assert _raw_header(raw, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"


def test_mail_of_no_list_has_no_unsubscribe_headers_and_carries_its_own():
    raw = build(
        _message(
            list_unsubscribe_url=None, list_unsubscribe_mailto=None,
            headers=[("X-PenguinMails-Warmup", "0f" * 16)],
        )
    )  # fmt: skip
    parsed = _parse(raw)

    assert parsed["List-Unsubscribe"] is None and parsed["List-Unsubscribe-Post"] is None
    assert _raw_header(raw, "X-PenguinMails-Warmup") == "0f" * 16


def test_a_line_break_in_a_further_header_is_refused():
    with pytest.raises(ValueError):
        build(_message(headers=[("X-Tag", "a\r\nBcc: victim@example.com")]))


def test_the_identifying_headers_are_written():
    raw = build(_message())
    parsed = _parse(raw)

    assert parsed["From"] == "Ana Smith <ana@example.com>"
    assert parsed["To"] == "jordan@acme.example.com"
    assert parsed["Subject"] == "Quick question"
    assert parsed["Message-ID"] == "<0193a1b2@example.com>"
    assert _raw_header(raw, "Date") == "Tue, 04 Mar 2025 05:06:07 +0000"
    # The VERP address is the envelope sender; the receiving MTA writes Return-Path from it.
    assert parsed["Return-Path"] is None
    assert b"bounces.example.com" not in raw


def test_in_reply_to_and_references_are_written_when_given():
    references = [f"<{i}.thread-message-id@example.com>" for i in range(5)]
    raw = build(_message(in_reply_to=references[-1], references=references))

    assert _raw_header(raw, "In-Reply-To") == references[-1]
    assert _raw_header(raw, "References") == " ".join(references)


def test_in_reply_to_and_references_are_absent_otherwise():
    parsed = _parse(build(_message()))

    assert parsed["In-Reply-To"] is None
    assert parsed["References"] is None


@pytest.mark.parametrize(
    "field", ["subject", "from_name", "to_address", "list_unsubscribe_url", "message_id"]
)
def test_a_line_break_in_a_header_value_is_refused(field: str):
    with pytest.raises(ValueError):
        build(_message(**{field: "<a@b.example>\r\nBcc: victim@example.com"}))


def test_every_line_ends_in_crlf_and_none_passes_998_characters():
    raw = build(_message(text="x" * 3000, html="<p>" + "y " * 2000 + "</p>"))

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
