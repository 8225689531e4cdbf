"""The rules: precompiled regexes plus checksums (Luhn, IBAN mod-97) and an entropy test, no model.

Every detector has a category (`pii/email`, `secret/github`, `prompt_injection`, ...). Cheap tests guard the
expensive ones: a detector whose text cannot match (no `@`, no digits, no `:`) is skipped, and candidates the
regex finds are confirmed in Python (checksums, ranges, placeholders) before they count.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    category: str
    start: int
    end: int


@dataclass(frozen=True)
class Detector:
    category: str
    pattern: re.Pattern[str] | Anchored
    confirm: Callable[[re.Match[str], str], bool] | None = None
    needs: tuple[str, ...] = ()  # the lowercased text must contain one of these for the detector to run
    and_needs: tuple[str, ...] = ()  # ... and one of these
    group: int = 0  # the regex group that is the finding's span
    # Characters that must not precede a match (checked here: a leading \b or lookbehind would stop the regex
    # engine from skipping ahead to the pattern's literal prefix, which is ten times slower).
    not_after: frozenset[str] = frozenset()
    lowercase: bool = False  # run on the lowercased text (faster than re.IGNORECASE)
    in_numbers: bool = False  # search only the runs of digits, spaces, dots and dashes (NUMBER_RUN)


class Anchored:
    """Runs `pattern` only where it can start: just before each `anchor` character, going back over `back`.

    For patterns whose rare character is in the middle (`@` of an e-mail, `:` of an IPv6 address): a regex
    search would try every position of the text; this tries a few.
    """

    def __init__(self, anchor: str, back: str, pattern: str, max_back: int = 64) -> None:
        self.anchor = anchor
        self.back = frozenset(back)
        self.pattern = re.compile(pattern)
        self.max_back = max_back

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        back, size = self.back, len(text)
        position = text.find(self.anchor)
        while position != -1:
            if (not position or text[position - 1] not in back) and (
                position + 1 >= size or text[position + 1] not in back
            ):
                position = text.find(self.anchor, position + 1)  # nothing around it could be part of a match
                continue
            start, limit = position, max(0, position - self.max_back)
            while start > limit and text[start - 1] in self.back:
                start -= 1
            match = self.pattern.match(text, start)
            if match is not None and match.end() > position:
                yield match
                position = text.find(self.anchor, match.end())
                continue
            end = position + 1
            while end < len(text) and text[end] in self.back:
                end += 1  # the rest of this run would start from the same place and fail the same way
            position = text.find(self.anchor, end)


# --- confirmations -------------------------------------------------------------------------------------------


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def luhn(number: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|65|64[4-9]|35|62)")


def _card(match: re.Match[str], text: str) -> bool:
    raw = match.group(0)
    number = _digits(raw)
    if not 13 <= len(number) <= 19 or not CARD_PREFIX.match(number) or len(set(number)) < 2:
        return False
    separators = {c for c in raw if not c.isdigit()}
    if len(separators) > 1:
        return False
    sizes = [len(group) for group in re.split(r"[ -]", raw)]
    # Cards are written whole or in the groups printed on them: 4-4-4-4(-3), Amex and Diners 4-6-5 / 4-6-4.
    return (len(sizes) == 1 or sizes[:4] == [4, 4, 4, 4] or sizes in ([4, 6, 5], [4, 6, 4])) and luhn(number)


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24,
    "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "ME": 22, "MK": 19, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip


def iban_valid(value: str) -> bool:
    iban = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(match: re.Match[str], text: str) -> bool:
    return iban_valid(match.group(0))


def _phone_digits(low: int, high: int) -> Callable[[re.Match[str], str], bool]:
    def confirm(match: re.Match[str], text: str) -> bool:
        return low <= len(_digits(match.group(match.lastindex or 0))) <= high

    return confirm


VERSION_WORDS = re.compile(r"version|firmware|release|upgrade|update|build|patch|\bv(?:er)?\.?\s*$", re.IGNORECASE)


CIDR_SUFFIX = re.compile(r"/(\d{1,2})\b")


def _ipv4(match: re.Match[str], text: str) -> bool:
    value = match.group(0)
    if any(int(octet) > 255 or (len(octet) > 1 and octet[0] == "0") for octet in value.split(".")):
        return False
    if value == "0.0.0.0" or value.startswith(("127.", "255.")):
        return False  # loopback, "any" and netmasks say nothing about anyone
    if prefix := CIDR_SUFFIX.match(text, match.end()):
        try:  # a network (10.0.0.0/16) names no one; a host with its prefix (10.1.2.3/32) does
            ipaddress.IPv4Network(f"{value}/{prefix.group(1)}")
            return int(prefix.group(1)) == 32
        except ValueError:
            pass
    # Four-part version numbers look like addresses; the words around them tell them apart.
    return not VERSION_WORDS.search(text[max(0, match.start() - 24) : match.start()])


def _varied(match: re.Match[str], text: str) -> bool:
    return len(set(match.group(0)[4:])) >= 6  # AKIAXXXXXXXXXXXXXXXX is a placeholder, not a key


def _ssn(match: re.Match[str], text: str) -> bool:
    area, group, serial = match.group(0).split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ipv6(match: re.Match[str], text: str) -> bool:
    value = match.group(0)
    groups = [g for g in value.split(":") if g]
    if len(groups) < 3 or not any(c.isdigit() for c in value):
        return False
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return not address.is_loopback and not address.is_unspecified


def _email(match: re.Match[str], text: str) -> bool:
    # `git@github.com:org/repo.git` is an SSH address, not a person's e-mail.
    return not (match.group(0).startswith("git@") and text[match.end() : match.end() + 1] == ":")


def entropy(value: str) -> float:
    counts = Counter(value)
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


SEPARATORS = re.compile(r"[-_/+]")
SRI_PREFIX = re.compile(r"sha\d{3}-", re.IGNORECASE)
HASH_CONTEXT = re.compile(r"(?:sha\d{3}[-:]|base64,|md5[-:])$", re.IGNORECASE)


def _high_entropy(match: re.Match[str], text: str) -> bool:
    value = match.group(0)
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value)):
        return False  # hex digests, UUIDs, identifiers: one or two character classes
    if max(len(part) for part in SEPARATORS.split(value)) < 16:
        return False  # words joined by separators (feature/JIRA-1234-add-login), not one random string
    if HASH_CONTEXT.search(text[max(0, match.start() - 8) : match.start()]) or SRI_PREFIX.match(value):
        return False  # integrity hashes and data URLs are public
    return entropy(value) >= 4.2


PLACEHOLDER = re.compile(
    r"your|example|sample|dummy|placeholder|changeme|redacted|xxxx|\*\*\*|<|\$\{|\{\{|\.\.\.|test", re.IGNORECASE
)


def _assigned_secret(match: re.Match[str], text: str) -> bool:
    value = text[match.start("value") : match.end("value")]  # the match may be on the lowercased text
    return not PLACEHOLDER.search(value) and entropy(value) >= 3.0 and any(c.isdigit() for c in value)


# --- detectors -----------------------------------------------------------------------------------------------

# Prompt-injection phrasings, matched on the lowercased text: (its first word, words one of which the text must
# contain for it to run, regex). Each regex starts with a literal word, so the regex engine jumps from one
# occurrence of it to the next instead of trying every position; the gate words spare the rest.
OBJECTS = r"(?:instructions?|prompts?|rules|directives?|guidelines|guardrails|programming|constraints)"
DETERMINERS = r"(?:all\s+|any\s+|the\s+|your\s+|my\s+|these\s+|those\s+)*"
ADJECTIVES = r"(?:(?:previous|prior|above|earlier|preceding|initial|original|system|safety|content)\s+)?"
REVEALED = (
    # "show me your instructions" is an attack, "show me the instructions (for the router)" is not.
    r"\s+(?:me\s+)?(?:your\s+(?:(?:full|hidden|secret|original|initial|exact)\s+)*"
    r"(?:system\s+prompt|system\s+message|instructions|prompt)"
    r"|the\s+(?:(?:full|hidden|secret|original|initial|exact)\s+)*system\s+(?:prompt|message)"
    r"|the\s+(?:hidden|secret|original|initial)\s+(?:instructions|prompt))"
)
INJECTIONS: list[tuple[str, tuple[str, ...], str]] = [
    *((verb, (), rf"{verb}\s+{DETERMINERS}{ADJECTIVES}{OBJECTS}") for verb in ("skip", "override", "bypass")),
    *(
        (
            verb,
            (),
            rf"{verb}\s+(?:{DETERMINERS}{ADJECTIVES}{OBJECTS}|(?:everything|all)\s+"
            r"(?:you\s+(?:were|have\s+been)\s+told|above|before|previously))",
        )
        for verb in ("ignore", "disregard", "forget")
    ),
    *(
        (verb.split()[0], ("prompt", "instructions", "system message"), verb.replace(" ", r"\s+") + REVEALED)
        for verb in ("reveal", "show", "print", "repeat", "output", "leak", "display", "tell me", "give me")
    ),
    (
        "what",
        ("prompt", "instructions"),
        r"what\s+(?:is|are|was|were)\s+your\s+(?:system\s+prompt|initial\s+instructions|original\s+instructions)",
    ),
    ("instructions", ("instructions",), r"(?:new|updated|real)\s+instructions\s*:"),
    (
        "now",
        (),
        r"you\s+are\s+now\s+(?:dan\b|in\s+developer\s+mode|an?\s+unrestricted|jailbroken|free\s+from|no\s+longer\s+bound)",
    ),
    ("developer", (), r"developer\s+mode\s+(?:enabled|activated)"),
    ("enable", (), r"enable\s+developer\s+mode"),
    ("activate", (), r"activate\s+developer\s+mode"),
    ("anything", (), r"do\s+anything\s+now\b"),
    ("jailbr", (), r"jailbr(?:eak(?:ing)?\s*(?::|mode|prompt)|oken\b)"),
    (
        "from",
        (),
        r"from\s+now\s+on,?\s+you\s+(?:will|must|are\s+going\s+to)\s+(?:ignore|disobey|answer\s+without|not\s+follow)",
    ),
    *(
        (
            verb,
            (),
            rf"{verb}\s+(?:that\s+)?(?:you\s+are|you're|as\s+if\s+you|as|to\s+be)\s+[^.\n]{{0,60}}?"
            r"(?:without|no|free\s+of|with\s+no)\s+(?:any\s+)?(?:restrictions|rules|filters|limits|limitations|guidelines|censorship)",
        )
        for verb in ("pretend", "act", "behave")
    ),
    *(
        (
            verb.split()[0],
            (),
            verb.replace(" ", r"\s+")
            + r"\s+(?:your\s+|all\s+|the\s+)*(?:safety|content)\s+(?:filters?|guidelines|protocols)",
        )
        for verb in ("disable", "turn off", "deactivate")
    ),
]
INJECTION_TOKENS = re.compile(r"<\|im_start\|>|<\|system\|>|\[/?inst\]|<<sys>>")
NUMBER_RUN = re.compile(r"\d[\d .-]{6,}")  # 7 characters at least: the shortest is an IPv4 address, 1.2.3.4

WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
NUMBER = WORD | frozenset("+-./")  # a number or token continues through these

DETECTORS: list[Detector] = [
    # Secrets first: when spans overlap, the earlier detector's finding wins.
    Detector(
        "secret/private_key",
        # The whole block: through its END line, or through the base64 lines that follow when it was cut off.
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?:\s*(?:[\w-]+: [^\n]*|[A-Za-z0-9+/=]{8,}))*)"
        ),
        needs=("private key",),
    ),
    Detector(
        "secret/aws", re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![0-9A-Za-z])"), confirm=_varied, not_after=WORD
    ),
    Detector(
        "secret/aws",
        re.compile(r"aws_?secret_?(?:access_?)?key\W{0,4}([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])", re.IGNORECASE),
        needs=("aws",),
        group=1,
    ),
    Detector("secret/github", re.compile(r"gh[pousr]_[A-Za-z0-9]{36,251}\b"), not_after=WORD),
    Detector("secret/github", re.compile(r"github_pat_[A-Za-z0-9_]{60,255}\b"), not_after=WORD),
    Detector("secret/gitlab", re.compile(r"glpat-[A-Za-z0-9_-]{20,}"), not_after=WORD),
    Detector("secret/slack", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), not_after=WORD),
    Detector("secret/slack", re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{20,}")),
    Detector("secret/anthropic", re.compile(r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}"), not_after=WORD),
    Detector("secret/openai", re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), not_after=WORD),
    Detector("secret/stripe", re.compile(r"sk_(?:live|test)_[A-Za-z0-9]{20,}"), not_after=WORD),
    Detector("secret/stripe", re.compile(r"rk_(?:live|test)_[A-Za-z0-9]{20,}"), not_after=WORD),
    Detector("secret/google", re.compile(r"AIza[0-9A-Za-z_-]{35}"), not_after=WORD),
    Detector("secret/google", re.compile(r"ya29\.[0-9A-Za-z_-]{20,}"), not_after=WORD),
    Detector("secret/huggingface", re.compile(r"hf_[A-Za-z]{34}\b"), not_after=WORD),
    Detector("secret/sendgrid", re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"), not_after=WORD),
    Detector(
        "secret/jwt", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), not_after=WORD
    ),
    *(
        Detector(
            "secret/password",
            re.compile(name + r"[\"']?\s*[:=]\s*[\"'](?P<value>[^\"'\s]{8,})[\"']"),
            confirm=_assigned_secret,
            group=1,
            lowercase=True,
        )
        for word, name in [
            ("api", r"api[_-]?key"),
            ("secret", r"secret(?:[_-]?key)?"),
            ("access", r"access[_-]?token"),
            ("auth", r"auth[_-]?token"),
            ("client", r"client[_-]?secret"),
            ("passw", r"passw(?:or)?d"),
            ("pwd", "pwd"),
        ]
    ),
    # PII.
    # The numeric ones look only inside runs of digits and separators (found once per text), not at every digit.
    Detector(
        "pii/credit_card",
        re.compile(r"\d(?:[ -]?\d){12,18}(?![\d-])"),
        confirm=_card,
        not_after=NUMBER,
        in_numbers=True,
    ),
    Detector(
        "pii/iban",
        re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        confirm=_iban,
        not_after=NUMBER,
    ),
    Detector(
        "pii/ssn",
        re.compile(r"\d{3}-\d{2}-\d{4}(?![\d-])"),
        confirm=_ssn,
        not_after=NUMBER,
        in_numbers=True,
    ),
    Detector(
        "pii/ssn",
        re.compile(r"\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\W{0,4}(\d{3} ?\d{2} ?\d{4})\b"),
        needs=("ssn", "social security"),
        group=1,
        lowercase=True,
    ),
    Detector(
        "pii/phone",
        re.compile(r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?!\w)"),
        confirm=_phone_digits(8, 15),
        needs=("+",),
        not_after=NUMBER,
    ),
    Detector("pii/phone", re.compile(r"\([2-9]\d{2}\) ?\d{3}[ .-]\d{4}(?![\w-]|\.\d)"), needs=("(",)),
    Detector(
        "pii/phone", re.compile(r"[2-9]\d{2}([ .-])\d{3}\1\d{4}(?![\w-]|\.\d)"), not_after=NUMBER, in_numbers=True
    ),
    Detector(
        "pii/phone",
        re.compile(r"0\d{1,4}(?:[ -]\d{2,8}){1,4}(?![\w-]|\.\d)"),
        confirm=_phone_digits(9, 12),
        not_after=NUMBER,
        in_numbers=True,
    ),
    *(
        Detector(
            "pii/phone",
            re.compile(word + r"\w{0,6}(?:\s+(?:number|no\.?|#))?\W{0,3}(\(?\d[\d ().-]{5,}\d)"),
            confirm=_phone_digits(7, 15),
            group=1,
            lowercase=True,
            not_after=WORD,
        )
        for word in (
            "phone",
            "tel",
            "mobile",
            "cell",
            "fax",
            "whatsapp",
            "call me at",
            "call me on",
            "call at",
            "call on",
        )
    ),
    Detector(
        "pii/ip_address",
        re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)"),
        confirm=_ipv4,
        not_after=NUMBER,
        in_numbers=True,
    ),
    Detector(
        "pii/ip_address",
        Anchored(":", "0123456789abcdefABCDEF:", r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])", 40),
        confirm=_ipv6,
        needs=(":",),
    ),
    Detector(
        "pii/email",
        Anchored(
            "@",
            string.ascii_letters + string.digits + "._%+-",
            r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b",
        ),
        confirm=_email,
        needs=("@",),
    ),
    *(
        Detector("prompt_injection", re.compile(regex), needs=and_needs, lowercase=True, not_after=WORD)
        for word, and_needs, regex in INJECTIONS
    ),
    Detector("prompt_injection", INJECTION_TOKENS, needs=("<|", "inst]", "<<sys"), lowercase=True),
    # Last: anything long and random that no specific rule named.
    Detector(
        "secret/high_entropy",
        re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}(?![\w+/=-])"),
        confirm=_high_entropy,
        not_after=NUMBER | frozenset("="),
    ),
]


class Scanner:
    """Finds what the rules flag in a text. Build once (it compiles the configured extras) and reuse."""

    def __init__(
        self,
        *,
        blocklist: Iterable[str] = (),
        patterns: dict[str, str] | None = None,
        entropy_detection: bool = True,
    ) -> None:
        detectors = [d for d in DETECTORS if entropy_detection or d.category != "secret/high_entropy"]
        words = sorted({w.strip().lower() for w in blocklist if w.strip()}, key=len, reverse=True)
        if words:
            alternation = "|".join(re.escape(w) for w in words)
            detectors.insert(0, Detector("blocklist", re.compile(rf"(?<!\w)(?:{alternation})(?!\w)"), lowercase=True))
        for name, regex in (patterns or {}).items():
            detectors.insert(0, Detector(f"custom/{name}", re.compile(regex)))
        self.detectors = detectors
        # Every word some detector needs, each tested once per text; a detector's gate is then a set test.
        self.words = sorted({word for d in detectors for word in (*d.needs, *d.and_needs)})
        self.gates = [(d, frozenset(d.needs), frozenset(d.and_needs)) for d in detectors]

    def scan(self, text: str, categories: Iterable[str] | None = None) -> list[Finding]:
        """Findings in text order; `categories` keeps only those (a prefix like `pii` names a family)."""
        wanted = tuple(categories) if categories is not None else None
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters grow when lowercased; spans must stay aligned
            lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        found: list[Finding] = []
        taken: list[tuple[int, int]] = []
        present = {word for word in self.words if word in lowered}
        numbers: list[tuple[int, int]] | None = None
        size = len(text)
        # This loop runs some 80 detectors per text: it is written for speed (no generator per detector).
        for detector, needs, and_needs in self.gates:
            if (needs and needs.isdisjoint(present)) or (and_needs and and_needs.isdisjoint(present)):
                continue
            if wanted is not None and not any(_within(detector.category, c) for c in wanted):
                continue
            target = lowered if detector.lowercase else text
            if detector.in_numbers:
                if numbers is None:
                    numbers = [m.span() for m in NUMBER_RUN.finditer(text)]
                # Two characters past the run, for the patterns' lookaheads.
                ranges = [(s, min(e + 2, size)) for s, e in numbers]
            else:
                ranges = [(0, size)]
            not_after = detector.not_after
            search = detector.pattern.search if not isinstance(detector.pattern, Anchored) else None
            for low, high in ranges:
                if search is None:
                    matches: Iterable[re.Match[str]] = detector.pattern.finditer(target)
                elif not not_after:
                    matches = detector.pattern.finditer(target, low, high)  # type: ignore[union-attr]
                else:
                    matches = ()
                    position = low
                    # Matches that start inside a word or number are skipped, and so is the rest of them:
                    # restarting one character later would find the same run again (quadratic on a long one).
                    while (match := search(target, position, high)) is not None:
                        first = match.start()
                        position = max(match.end(), first + 1)
                        if first and text[first - 1] in not_after:
                            continue
                        self._report(detector, match, text, found, taken)
                for match in matches:
                    self._report(detector, match, text, found, taken)
        found.sort(key=lambda f: f.start)
        return found

    @staticmethod
    def _report(
        detector: Detector, match: re.Match[str], text: str, found: list[Finding], taken: list[tuple[int, int]]
    ) -> None:
        start, end = match.span(detector.group)
        if detector.confirm is not None and not detector.confirm(match, text):
            return
        if any(start < e and s < end for s, e in taken):
            return  # an earlier, more specific detector already reported this span
        taken.append((start, end))
        found.append(Finding(detector.category, start, end))


def _within(category: str, wanted: str) -> bool:
    return category == wanted or category.startswith(wanted.rstrip("/") + "/")


def redact(text: str, findings: list[Finding], mask: str = "[{category}]") -> str:
    parts, position = [], 0
    for finding in findings:
        parts += [text[position : finding.start], mask.format(category=finding.category.upper())]
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)
