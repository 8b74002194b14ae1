"""Episode segmenters: where a trace's episodes end, offline on a whole trace or online while it is generated.

A boundary is a token position in the completion (the count of completion tokens before it): the end of one episode
and the fork point of the meta-prover, i.e. the token count before the paragraph (or line) that opens the next
episode starts. The trace's end is not a boundary; k boundaries make k + 1 episodes.

Segmenters (registry SEGMENTERS, built from `EpisodesConfig` by `make_segmenter`):
- `markers`: paragraphs are separated by blank lines; a paragraph whose text begins with a marker (`Wait`, `But wait`,
  ...; the marker followed by a non-alphanumeric character or the paragraph's end) opens an episode, unless it comes
  fewer than `min_paragraphs` paragraphs after the previous boundary (or the start); boundaries past
  `max_episodes - 1` are dropped (their episodes merge into the last); none after `end_text` (e.g. `</think>`).
- `backtrack`: a line `Backtrack to Line N` / `Backtrack to beginning` opens an episode (`max_episodes`, `end_text`
  as above).
- `fixed`: every `chunk_tokens` tokens (`max_episodes` as above).

Text positions map to tokens through each token's decoded character end: the boundary is the number of tokens whose
text ends at or before the paragraph start (a token straddling it belongs to the earlier episode's side only if it
ends there). Online and offline share that mapping and the acceptance rule, and a test checks they agree.
Online: `seg.stream(tokenizer)` gives one `EpisodeStream` per sequence; `feed(new_ids)` returns boundaries as soon as
they are certain (a marker paragraph is certain once the marker's word is complete), `finish()` the rest at the end.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

_PARAGRAPH_START = re.compile(r"\n[ \t\r]*\n\s*(?=\S)")   # end of a blank-line separator = first char of a paragraph
_LINE_START = re.compile(r"\n(?=.)", re.S)                 # first char of a new line
_BACKTRACK = re.compile(r"Backtrack to (?:beginning(?![A-Za-z0-9])|Line \d+(?!\d))")
_BACKTRACK_PREFIXES = ("Backtrack to beginning", "Backtrack to Line ")
# The markers by which DeepSeek-R1-style traces start a new attempt: the R1 presets' `episodes.markers`
# (configs/deepscaler_*.yaml, configs/r1_distill_*.yaml list the same words).
R1_MARKERS = ("Wait", "But wait", "Alternatively", "Is there another way to think about this?",
              "But let me double-check", "But hold on")


# ------------------------------------------------------------------------------------------- characters -> tokens

class CharTracker:
    """Incremental detokenisation: the decoded text of a token sequence and each token's character end.

    A token that decodes to an incomplete character (U+FFFD at the end, e.g. half a UTF-8 code point of a byte-level
    BPE) waits for the next ones; all of them then end where the completed character ends.
    """

    WINDOW = 6   # tokens of context decoded before the new ones (enough for merges at token edges)

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.decode = _decoder(tokenizer)
        self.ids: list[int] = []
        self.text = ""
        self.char_ends: list[int] = []   # char_ends[i]: end of token i's text in self.text (for emitted tokens)

    def feed(self, new_ids) -> None:
        decode = self.decode
        for t in new_ids:
            self.ids.append(int(t))
            first = len(self.char_ends)                 # first token not emitted yet
            s = max(0, first - self.WINDOW)
            prefix = decode(self.ids[s:first]) if first > s else ""
            full = decode(self.ids[s:])
            if full.endswith("\ufffd") or not full.startswith(prefix):
                continue
            # Appended with the attribute let go first: CPython then grows the only reference in place, where
            # `self.text += ...` copies the whole text (O(length) per token, quadratic over a trace).
            text, self.text = self.text, ""
            text += full[len(prefix):]
            self.text = text
            self.char_ends.extend([len(text)] * (len(self.ids) - first))

    def tokens_before(self, char_pos: int) -> int:
        """Number of leading tokens whose text ends at or before char_pos."""
        return bisect.bisect_right(self.char_ends, char_pos)


def _decoder(tokenizer):
    """tokenizer.decode, or the same decode without transformers' Python around it where that is provably the same:
    a fast (Rust-backed) tokenizer whose decode and _decode are transformers' own and that cleans up no spaces; there
    `decode(ids)` is `_tokenizer.decode(ids, skip_special_tokens=False)`, and the wrapper's argument checks cost as
    much as the decode itself (~1.5 us of ~3 us per call, and the online segmenter decodes twice per token)."""
    if not type(tokenizer).__module__.startswith("transformers"):
        return tokenizer.decode
    try:
        from transformers import PreTrainedTokenizerFast
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    except ImportError:
        return tokenizer.decode
    cls = type(tokenizer)
    backend = getattr(tokenizer, "_tokenizer", None)
    if (isinstance(tokenizer, PreTrainedTokenizerFast) and backend is not None
            and cls.decode is PreTrainedTokenizerBase.decode and cls._decode is PreTrainedTokenizerFast._decode
            and not getattr(tokenizer, "clean_up_tokenization_spaces", True)):
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return tokenizer.decode


def token_char_ends(token_ids, tokenizer) -> tuple[str, list[int]]:
    tr = CharTracker(tokenizer)
    tr.feed(token_ids)
    return tr.text, tr.char_ends


# ------------------------------------------------------------------------------------------------ text rules

def _marker_decision(s: str, markers, final: bool):
    """True / False if paragraph text s (from its first char) does / does not begin with a marker; None if the text
    so far cannot tell yet (a marker could still be completed or extended)."""
    undecided = False
    for m in markers:
        if len(s) > len(m):
            if s.startswith(m) and not s[len(m)].isalnum():
                return True
        elif m.startswith(s):        # s is a prefix of m (or m itself): more text decides
            if final and s == m:
                return True
            undecided = undecided or not final
    return None if undecided else False


def _backtrack_decision(s: str, final: bool):
    m = _BACKTRACK.match(s)
    if m and (m.end() < len(s) or final):
        return True
    if final:
        return False
    if m or any(p.startswith(s) for p in _BACKTRACK_PREFIXES) or re.fullmatch(r"Backtrack to Line \d*", s):
        return None
    return False


@dataclass
class _Rule:
    unit: re.Pattern                 # where a candidate unit (paragraph / line) starts
    decide: object                   # (unit text, final) -> True / False / None
    min_units: int                   # units between boundaries (1: any)
    max_boundaries: int | None
    end_text: str | None


def _text_boundaries(text: str, rule: _Rule) -> list[int]:
    """Offline: character starts of the units that open an episode, over the whole text."""
    out, last_unit = [], 0
    for u, m in enumerate(rule.unit.finditer(text), start=1):
        if rule.max_boundaries is not None and len(out) >= rule.max_boundaries:
            break
        start = m.end()
        if rule.end_text and rule.end_text in text[:start]:
            break
        if u - last_unit >= rule.min_units and rule.decide(text[start:_unit_end(text, start, rule)], True):
            out.append(start)
            last_unit = u
    return out


def _unit_end(text: str, start: int, rule: _Rule) -> int:
    m = rule.unit.search(text, start)
    return m.start() if m else len(text)


# --------------------------------------------------------------------------------------------------- segmenters

class EpisodeStream:
    """Online segmentation of one sequence's completion tokens (see the module docstring)."""

    def __init__(self, seg: "Segmenter", tokenizer):
        self.seg = seg
        self.chars = CharTracker(tokenizer) if seg.rule is not None else None
        self.num_tokens = 0
        self.boundaries: list[int] = []
        self._scan = 0            # text position from which the next unit start is searched
        self._units = 0           # units seen (the first paragraph/line is unit 0)
        self._last_unit = 0
        self._pending: int | None = None   # start of a unit whose decision waits for more text
        self._done = False

    def feed(self, new_ids) -> list[int]:
        """Add new completion tokens; returns the boundaries that became certain (usually none or one)."""
        new_ids = list(new_ids)
        before = len(self.boundaries)
        if self.seg.rule is None:
            self._fixed(len(new_ids), final=False)
        else:
            self.chars.feed(new_ids)
            self.num_tokens += len(new_ids)
            self._advance(final=False)
        return self.boundaries[before:]

    def finish(self) -> list[int]:
        """The sequence ended: decide what was waiting for more text; returns boundaries found now."""
        before = len(self.boundaries)
        if self.seg.rule is None:
            self._fixed(0, final=True)
        else:
            self._advance(final=True)
        return self.boundaries[before:]

    @property
    def closed(self) -> bool:
        """No boundary can come any more (`end_text` seen, or `max_episodes` reached): feed and finish are no-ops."""
        return self._done or self._full()

    def tokens_needed(self) -> int | None:
        """The token count from which feeding can give a boundary: the fixed segmenter's next chunk end + 1 (its
        boundary is certain once a token after it exists; finish adds none); None for text rules (any token)."""
        if self.seg.rule is not None:
            return None
        return (len(self.boundaries) + 1) * self.seg.chunk_tokens + 1

    def _full(self) -> bool:
        mb = self.seg.max_boundaries
        return mb is not None and len(self.boundaries) >= mb

    def _fixed(self, n: int, final: bool) -> None:
        # A boundary at k * chunk is certain once a token after it exists (the trace's end is not a boundary).
        self.num_tokens += n
        c = self.seg.chunk_tokens
        nxt = (len(self.boundaries) + 1) * c
        while not self._full() and nxt < self.num_tokens:
            self.boundaries.append(nxt)
            nxt += c

    def _advance(self, final: bool) -> None:
        rule, text = self.seg.rule, self.chars.text
        while not self._done and not self._full():
            if self._pending is None:
                m = rule.unit.search(text, self._scan)
                if m is None:
                    # Future unit starts lie after the last non-space character (separators are whitespace).
                    self._scan = max(self._scan, len(text.rstrip()))
                    return
                self._pending = m.end()
                self._scan = m.end()
                self._units += 1
                if rule.end_text and rule.end_text in text[:self._pending]:
                    self._done = True
                    return
                if self._units - self._last_unit < rule.min_units:
                    self._pending = None
                    continue
            start = self._pending
            nxt = rule.unit.search(text, start)
            unit_end = nxt.start() if nxt else len(text)
            d = rule.decide(text[start:unit_end], final or nxt is not None)
            if d is None:
                return
            if d:
                self.boundaries.append(self.chars.tokens_before(start))
                self._last_unit = self._units
            self._pending = None


class Segmenter:
    """One segmentation rule; `boundaries` offline, `stream` online (both in completion tokens)."""

    def __init__(self, rule: _Rule | None, chunk_tokens: int | None = None, max_episodes: int | None = None):
        self.rule = rule
        self.chunk_tokens = chunk_tokens
        self.max_boundaries = None if max_episodes is None else max_episodes - 1

    def boundaries(self, token_ids, tokenizer=None) -> list[int]:
        n = len(token_ids)
        if self.rule is None:
            out = list(range(self.chunk_tokens, n, self.chunk_tokens))
            return out if self.max_boundaries is None else out[:self.max_boundaries]
        text, ends = token_char_ends(token_ids, tokenizer)
        return [bisect.bisect_right(ends, c) for c in _text_boundaries(text, self.rule)]

    def text_boundaries(self, text: str) -> list[int]:
        """Character offsets of the episode starts of a text (markers and backtrack segmenters)."""
        if self.rule is None:
            raise ValueError("the fixed segmenter works on tokens; call boundaries(token_ids)")
        return _text_boundaries(text, self.rule)

    def stream(self, tokenizer=None) -> EpisodeStream:
        return EpisodeStream(self, tokenizer)


def markers_segmenter(markers, min_paragraphs: int = 3, max_episodes: int | None = None,
                      end_text: str | None = None) -> Segmenter:
    markers = tuple(markers)
    if not markers or not all(isinstance(m, str) and m for m in markers):
        raise ValueError(f"markers must be non-empty strings, got {markers!r}")
    if min_paragraphs < 1:
        raise ValueError(f"min_paragraphs must be >= 1, got {min_paragraphs}")
    rule = _Rule(_PARAGRAPH_START, lambda s, final: _marker_decision(s, markers, final), min_paragraphs,
                 None if max_episodes is None else max_episodes - 1, end_text)
    return Segmenter(rule, max_episodes=max_episodes)


def backtrack_segmenter(max_episodes: int | None = None, end_text: str | None = None) -> Segmenter:
    rule = _Rule(_LINE_START, _backtrack_decision, 1, None if max_episodes is None else max_episodes - 1, end_text)
    return Segmenter(rule, max_episodes=max_episodes)


def fixed_segmenter(chunk_tokens: int, max_episodes: int | None = None) -> Segmenter:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    return Segmenter(None, chunk_tokens=chunk_tokens, max_episodes=max_episodes)


SEGMENTERS = {
    "markers": lambda cfg: markers_segmenter(cfg.markers, cfg.min_paragraphs, cfg.max_episodes, cfg.end_text),
    "backtrack": lambda cfg: backtrack_segmenter(cfg.max_episodes, cfg.end_text),
    "fixed": lambda cfg: fixed_segmenter(cfg.chunk_tokens, cfg.max_episodes),
}


def make_segmenter(cfg) -> Segmenter:
    """The segmenter named by cfg.segmenter (an `EpisodesConfig`)."""
    if cfg.segmenter not in SEGMENTERS:
        raise ValueError(f"episodes.segmenter: unknown segmenter {cfg.segmenter!r} (known: {sorted(SEGMENTERS)})")
    return SEGMENTERS[cfg.segmenter](cfg)
