"""Removing credentials from free text before it is logged, published or returned (pure).

Operators type a `reason` for a rotation; during an incident the text pasted there may well be the
leaked token itself, a SAS URL, a connection string or a bearer header, and not always verbatim: URL-
encoded (copied from a query string, once or several times), base64-wrapped (a Kubernetes Secret's
`data`, wrapped every 64 or 76 characters by a tool), JSON-escaped (Go's and .NET's encoders write
`&` as `\\u0026` and .NET `+` as `\\u002B`), HTML-escaped (`&amp;`) or with spaces around its `&`.
Upstream error messages may echo a request body (an admission webhook quoting the patched `data`).
Anything shaped like a gateway token or a secret is cut out whole (a partial signature is still a
leak); the rest of the text is kept.

Two ways in: `redact` recognises credentials by their shape; `known_grams`/`scrub_known` remove the
values the process itself holds (a token it just generated, read or wrote) in every encoding above,
even a piece of one (a message truncated in the middle of a signature).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Callable, Iterable, Set
from urllib.parse import unquote

REDACTED = "<redacted>"

# The separator of a token's three parts, as text encoders write `&`, with spaces around or not.
_AMP = r"(?:&|\\u0026|&amp;|&#0*38;|&#x0*26;)"
# A signature character, raw or escaped by a JSON encoder (.NET escapes `+`; some escape `/` as `\/`).
_B64 = r"(?:[A-Za-z0-9+/=_-]|\\u00(?:2[bBfF]|3[dD])|\\/)"
# A gateway token ({gateway}&{yyyyMMddHHmm}&{signature}), with the portal's `GatewayKey ` prefix or not.
# A signature wrapped over lines or split by spaces goes too: continuation chunks that look like base64
# (a digit, `+`, `/` or `=` in them, so that the words of a sentence after a token are kept).
# The gateway part is a maximal run (lookbehind, possessive): linear time on long text without tokens.
TOKENISH = re.compile(rf"(GatewayKey\s+)?(?<![^&\s\"'\\])[^&\s\"'\\]{{1,256}}+"
                      rf"\s*{_AMP}\s*\d{{12}}\s*{_AMP}\s*{_B64}{{8,}}"
                      rf"(?:\s+(?=[A-Za-z0-9+/=_-]*[0-9+/=])[A-Za-z0-9+/=_-]{{4,}})*")
# Whole credentials, recognised by their shape (applied before encoded words are looked into).
_SECRETISH = [
    re.compile(r"\bGatewayKey\s+\S+", re.I),                                  # portal form, any shape
    re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}", re.I),                   # an Authorization value
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # a JWT
    # name=value / "name": "value" where the name ends in a secret word: SAS `sig=`, connection strings'
    # `AccountKey=` / `SharedAccessKey=`, OAuth `client_secret=`, JSON `"accessToken": "..."`. A colon
    # counts after a quoted name or right before the value, so that prose ("token: not valid") stays.
    re.compile(r"""["']?\b[\w-]{0,40}?(?:sig|signature|key|secret|password|passwd|pwd|token|code|credential)"""
               r"""(?:["']?\s*=\s*|["']\s*:\s*|:)["']?[^&\s"';,]+""", re.I),
]
_NEEDS = [("gatewaykey",), ("bearer",), ("eyj",), ("=", ":")]
# Long runs of key material (base64 / hex); 40+ so that GUIDs (36) and resource ids ('/' splits
# them) survive. Applied last: an encoded whole must be seen before a piece of it is cut out.
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+_-])[A-Za-z0-9+_-]{40,}={0,2}(?![A-Za-z0-9+=_-])")
# A long base64 run with `/` in it: a bare signature (HMAC-SHA512: 88 characters), unless it reads
# as a path (every `/`, `-`, `_` separated piece short, no `+`, no padding).
_SLASHED_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/=_-])")
_PATH_PIECE_MAX = 20
# A word that some encoder escaped: percent-encoding, JSON `\uXXXX` / `\/`, HTML entities.
_WORD = re.compile(r"[^\s\"'<>]+")
_ESCAPE_MARK = re.compile(r"%[0-9A-Fa-f]{2}|\\(?:u[0-9A-Fa-f]{4}|[\\/bfnrt])|&[#A-Za-z0-9]{1,8};")
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|([\"\\/bfnrt]))")
_JSON_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# Base64, possibly wrapped: chunks separated by a line break (raw, or JSON-escaped `\n`).
_BASE64_CHUNK = r"[A-Za-z0-9+/]{4,}+={0,2}+"
_BASE64_WRAPPED = re.compile(rf"(?<![A-Za-z0-9+/=])(?:{_BASE64_CHUNK}(?:[ \t]*(?:\r?\n|\\r\\n|\\n)[ \t]*))*"
                             rf"{_BASE64_CHUNK}")
_LINE_BREAK = re.compile(r"\s+|\\r|\\n")
_MIN_BASE64 = 24
_DECODE_ROUNDS = 8   # percent-encoding applied up to this many times is still seen through
_DEPTH = 3           # nested wrappings (base64 of a URL-encoded token, ...) looked into


def _slashed(match: re.Match[str]) -> str:
    run = match.group(0)
    if "+" in run or run.endswith("="):
        return REDACTED
    pieces = re.split(r"[/_-]", run)
    return run if max(len(p) for p in pieces) < _PATH_PIECE_MAX else REDACTED


def _shapes(text: str) -> str:
    cleaned = TOKENISH.sub(REDACTED, text) if "&" in text or "\\" in text else text
    lower = cleaned.lower()
    for pattern, needed in zip(_SECRETISH, _NEEDS, strict=True):
        if any(n in lower for n in needed):  # a cheap test first: most text holds none of these
            cleaned = pattern.sub(REDACTED, cleaned)
            lower = cleaned.lower()
    return cleaned


def _runs(text: str) -> str:
    cleaned = _SLASHED_RUN.sub(_slashed, text) if "/" in text else text
    return _LONG_RUN.sub(REDACTED, cleaned)


def _unescape_once(text: str) -> str:
    text = _JSON_ESCAPE.sub(lambda m: _JSON_SIMPLE.get(m.group(2), m.group(2)) if m.group(2)
                            else chr(int(m.group(1), 16)), text)
    return unquote(html.unescape(text))


def _holds_secret(text: str, depth: int) -> bool:
    return depth > 0 and _redact(text, depth - 1) != text


def _escaped_word(depth: int) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        """A word some encoder escaped (a query string, a JSON string, HTML) that hides a secret goes whole."""
        word = decoded = match.group(0)
        if not _ESCAPE_MARK.search(word):
            return word
        for _ in range(_DECODE_ROUNDS):
            previous, decoded = decoded, _unescape_once(decoded)
            if decoded == previous:
                break
            if _holds_secret(decoded, depth):
                return REDACTED
        return word

    return replace


def _b64decode(run: str) -> str | None:
    for cut in range(4):  # a run cut out of a longer one may be misaligned at its end
        part = run[: len(run) - cut] if cut else run
        part = part.rstrip("=")
        if len(part) % 4 == 1:
            continue
        try:
            raw = base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        text = raw.decode("utf-8", errors="replace")
        # Binary (an image, a certificate's DER, a hash) holds no pasted text: not looked into.
        return text if text.replace("\n", "").replace("\r", "").replace("\t", "").isprintable() else None
    return None


def _base64(depth: int) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        """A base64 run (wrapped over lines or not) whose decoding holds a secret goes whole."""
        text = match.group(0)
        joined = _LINE_BREAK.sub("", text)
        if len(joined) < _MIN_BASE64:
            return text
        candidates = [joined]
        chunks = [c for c in _LINE_BREAK.split(text) if c]
        if len(chunks) > 1:  # a label before the wrapped block, or lines that are separate values
            candidates += ["".join(chunks[i:]) for i in range(1, len(chunks))] + chunks
        for candidate in candidates:
            decoded = _b64decode(candidate) if len(candidate) >= _MIN_BASE64 else None
            if decoded is not None and _holds_secret(decoded, depth):
                return REDACTED
        return text

    return replace


def _redact(text: str, depth: int) -> str:
    # Encoded wholes before long runs: a run rule would cut a piece out of one and leave the rest.
    cleaned = _shapes(text)
    if any(marker in cleaned for marker in ("%", "\\", "&")):
        cleaned = _WORD.sub(_escaped_word(depth), cleaned)
    if depth > 0:
        cleaned = _BASE64_WRAPPED.sub(_base64(depth), cleaned)
    return _runs(cleaned)


def redact(text: str) -> str:
    """`text` without anything that looks like a token or secret (each replaced by `<redacted>`)."""
    return _redact(text, _DEPTH)


def clean_reason(reason: str, limit: int = 200) -> str:
    """An operator's free-text reason, safe to log and publish: secrets removed, control characters
    flattened, length bounded. Only a head of the text is read (what is kept is shorter still), so a
    megabyte of pasted text costs no more than a few kilobytes."""
    head = reason[: max(2048, limit * 16)]
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in head).split())
    cleaned = redact(flat)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


_URL_PARTS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/*)?(?P<netloc>[^/?#\\]*)(?P<path>[^?#]*)"
                        r"(?P<tail>[?#].*)?$", re.S)


def url_shown(value: str, limit: int = 80) -> str:
    """A URL for an error message: its user information (`user:password@`) and its query and fragment
    (a SAS `sig=`) replaced by `<redacted>`, the rest redacted like any text and bounded. Enough to
    tell which setting and which host is wrong, nothing an attacker could reuse."""
    match = _URL_PARTS.match(value)
    if match is None:  # pragma: no cover - the pattern matches any string
        return redact(value)[:limit]
    netloc = match["netloc"]
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    tail = f"{match['tail'][0]}{REDACTED}" if match["tail"] else ""
    shown = f"{match['scheme'] or ''}{netloc}{match['path']}{tail}"
    cleaned = redact(shown)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


# --- values the process knows -----------------------------------------------------------------------

GRAM = 12  # no run of this many characters of a known secret (in any encoding) survives `scrub_known`
_MIN_SECRET = GRAM
_RUN = re.compile(r"[^\s\"'<>,;()\[\]{}]")


def _secret_part(value: str) -> str:
    """What in `value` is secret: a gateway token's signature (its gateway and expiry are shown in
    clear everywhere); any other value whole."""
    raw = value.strip()
    if raw.startswith("GatewayKey "):
        raw = raw[len("GatewayKey "):].strip()
    parts = raw.split("&")
    return parts[2] if len(parts) == 3 and len(parts[2]) >= _MIN_SECRET else raw


def _base64_cores(value: str) -> set[str]:
    """The base64 of `value` at each of the three byte alignments it can have inside a longer
    encoded text, without the characters that depend on its neighbours."""
    cores = set()
    data = value.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode().rstrip("=")
        head = (offset * 4 + 2) // 3
        tail = 2 if (offset + len(data)) % 3 else 0
        core = encoded[head: len(encoded) - tail]
        cores.add(core)
    return cores


def known_grams(value: str) -> frozenset[str]:
    """Every `GRAM`-character piece of `value`'s secret part and of the base64 of the value and of its
    `GatewayKey ` form (a Secret's `data`), at each alignment. Escaped forms need no grams of their
    own: between two escapes the raw characters remain, and a piece too short to match is shorter
    than `GRAM` too (`redact` decodes escaped wholes). A secret shorter than `GRAM` yields nothing."""
    secret = _secret_part(value)
    if len(secret) < _MIN_SECRET:
        return frozenset()
    raw = value.strip()
    token = raw[len("GatewayKey "):].strip() if raw.startswith("GatewayKey ") else raw
    forms = {secret}
    for whole in {token, f"GatewayKey {token}"}:
        forms |= _base64_cores(whole)
    return frozenset(form[i: i + GRAM] for form in forms for i in range(len(form) - GRAM + 1))


def scrub_known(text: str, grams: Set[str]) -> str:
    """`text` with every run that holds a piece of a known secret (see `known_grams`) cut out, the
    whole run of non-separator characters around it included."""
    if not grams or len(text) < GRAM:
        return text
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - GRAM + 1):
        if text[i: i + GRAM] in grams:
            start, end = i, i + GRAM
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        if start < last:  # already swallowed by the previous run's extension
            start = last
        while start > last and _RUN.match(text, start - 1):
            start -= 1
        while end < len(text) and _RUN.match(text, end):
            end += 1
        out += [text[last:start], REDACTED]
        last = max(last, end)
    out.append(text[last:])
    return "".join(out)


def scrub(text: str, grams: Iterable[str] | Set[str] = frozenset()) -> str:
    """One step for text that leaves the process: known values cut out, then anything secret-shaped."""
    known = grams if isinstance(grams, Set) else frozenset(grams)
    return redact(scrub_known(text, known))
