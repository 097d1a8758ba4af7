"""A 5 x 9 pixel font, so that a PNG picture can say what it shows without a plotting library.

The image grids (:mod:`minivae.tool.figures`) are drawn by a dependency-free PNG writer;
their titles, column labels and axis values are drawn with this font. Each glyph is
5 pixels wide and 9 high: capitals and digits use rows 0-6 (the baseline is row 6),
lower-case letters rows 2-6, and the descenders of g, j, p, q, y rows 7-8. Characters
are set 6 pixels apart (one blank column) and lines 11 pixels apart; a character
outside printable ASCII is drawn as ``?``.
"""

from __future__ import annotations

import numpy as np

GLYPH_W, GLYPH_H = 5, 9
#: horizontal and vertical distance between characters and lines, in font pixels
ADVANCE, LINE = GLYPH_W + 1, GLYPH_H + 2

# Each block: a line naming the characters (one per 6 columns), then the 9 rows of their
# glyphs ('#' ink, '.' paper), glyphs 6 columns apart.
_GLYPHS = r"""
0     1     2     3     4     5     6     7     8     9     A     B     C     D
.###. ..#.. .###. ##### ...#. ##### ..##. ##### .###. .###. .###. ####. .###. ###..
#...# .##.. #...# ...#. ..##. #.... .#... ....# #...# #...# #...# #...# #...# #..#.
#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#. #...# #...# #...# #...# #.... #...#
#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#.. .###. .#### ##### ####. #.... #...#
##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....# #...# #...# #.... #...#
#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#. #...# #...# #...# #..#.
.###. .###. ##### .###. ...#. .###. .###. .#... .###. .##.. #...# ####. .###. ###..
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....

E     F     G     H     I     J     K     L     M     N     O     P     Q     R
##### ##### .###. #...# .###. ..### #...# #.... #...# #...# .###. ####. .###. ####.
#.... #.... #...# #...# ..#.. ...#. #..#. #.... ##.## #...# #...# #...# #...# #...#
#.... #.... #.... #...# ..#.. ...#. #.#.. #.... #.#.# ##..# #...# #...# #...# #...#
####. ####. #.### ##### ..#.. ...#. ##... #.... #.#.# #.#.# #...# ####. #...# ####.
#.... #.... #...# #...# ..#.. ...#. #.#.. #.... #...# #..## #...# #.... #.#.# #.#..
#.... #.... #...# #...# ..#.. #..#. #..#. #.... #...# #...# #...# #.... #..#. #..#.
##### #.... .#### #...# .###. .##.. #...# ##### #...# #...# .###. #.... .##.# #...#
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....

S     T     U     V     W     X     Y     Z     a     b     c     d     e     f
.#### ##### #...# #...# #...# #...# #...# ##### ..... #.... ..... ....# ..... ..##.
#.... ..#.. #...# #...# #...# #...# #...# ....# ..... #.... ..... ....# ..... .#..#
#.... ..#.. #...# #...# #...# .#.#. .#.#. ...#. .###. #.##. .###. .##.# .###. .#...
.###. ..#.. #...# #...# #.#.# ..#.. ..#.. ..#.. ....# ##..# #.... #..## #...# ###..
....# ..#.. #...# #...# #.#.# .#.#. ..#.. .#... .#### #...# #.... #...# ##### .#...
....# ..#.. #...# .#.#. #.#.# #...# ..#.. #.... #...# #...# #...# #...# #.... .#...
####. ..#.. .###. ..#.. .#.#. #...# ..#.. ##### .#### ####. .###. .#### .###. .#...
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....

g     h     i     j     k     l     m     n     o     p     q     r     s     t
..... #.... ..#.. ...#. #.... .##.. ..... ..... ..... ..... ..... ..... ..... .#...
..... #.... ..... ..... #.... ..#.. ..... ..... ..... ..... ..... ..... ..... .#...
.#### #.##. .##.. ..##. #..#. ..#.. ##.#. #.##. .###. ####. .#### #.##. .#### ###..
#...# ##..# ..#.. ...#. #.#.. ..#.. #.#.# ##..# #...# #...# #...# ##..# #.... .#...
#...# #...# ..#.. ...#. ##... ..#.. #.#.# #...# #...# #...# #...# #.... .###. .#...
#...# #...# ..#.. ...#. #.#.. ..#.. #.#.# #...# #...# #...# #...# #.... ....# .#..#
.#### #...# .###. ...#. #..#. .###. #.#.# #...# .###. ####. .#### #.... ####. ..##.
....# ..... ..... #..#. ..... ..... ..... ..... ..... #.... ....# ..... ..... .....
.###. ..... ..... .##.. ..... ..... ..... ..... ..... #.... ....# ..... ..... .....

u     v     w     x     y     z     !     "     #     $     %     &     '     (
..... ..... ..... ..... ..... ..... ..#.. .#.#. .#.#. ..#.. ##... .##.. ..#.. ...#.
..... ..... ..... ..... ..... ..... ..#.. .#.#. .#.#. .#### ##..# #..#. ..#.. ..#..
#...# #...# #...# #...# #...# ##### ..#.. ..... ##### #.#.. ...#. #.#.. ..... .#...
#...# #...# #...# .#.#. #...# ...#. ..#.. ..... .#.#. .###. ..#.. .#... ..... .#...
#...# #...# #.#.# ..#.. #...# ..#.. ..#.. ..... ##### ..#.# .#... #.#.# ..... .#...
#..## .#.#. #.#.# .#.#. #...# .#... ..... ..... .#.#. ####. #..## #..#. ..... ..#..
.##.# ..#.. .#.#. #...# .#### ##### ..#.. ..... .#.#. ..#.. ...## .##.# ..... ...#.
..... ..... ..... ..... ....# ..... ..... ..... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... .###. ..... ..... ..... ..... ..... ..... ..... ..... .....

)     *     +     ,     -     .     /     :     ;     <     =     >     ?     @
.#... ..... ..... ..... ..... ..... ..... ..... ..... ...#. ..... .#... .###. .###.
..#.. ..#.. ..#.. ..... ..... ..... ....# .##.. .##.. ..#.. ..... ..#.. #...# #...#
...#. #.#.# ..#.. ..... ..... ..... ...#. .##.. .##.. .#... ##### ...#. ....# #.###
...#. .###. ##### ..... ##### ..... ..#.. ..... ..... #.... ..... ....# ...#. #.#.#
...#. #.#.# ..#.. ..... ..... ..... .#... .##.. .##.. .#... ##### ...#. ..#.. #.###
..#.. ..#.. ..#.. .##.. ..... .##.. #.... .##.. ..#.. ..#.. ..... ..#.. ..... #....
.#... ..... ..... ..#.. ..... .##.. ..... ..... .#... ...#. ..... .#... ..#.. .###.
..... ..... ..... .#... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....

[     \     ]     ^     _     `     {     |     }     ~
.###. ..... .###. ..#.. ..... .#... ...## ..#.. ##... .....
.#... #.... ...#. .#.#. ..... ..#.. ..#.. ..#.. ..#.. .....
.#... .#... ...#. #...# ..... ..... ..#.. ..#.. ..#.. .#...
.#... ..#.. ...#. ..... ..... ..... .#... ..#.. ...#. #.#.#
.#... ...#. ...#. ..... ..... ..... ..#.. ..#.. ..#.. ...#.
.#... ....# ...#. ..... ..... ..... ..#.. ..#.. ..#.. .....
.###. ..... .###. ..... ..... ..... ...## ..#.. ##... .....
..... ..... ..... ..... ##### ..... ..... ..#.. ..... .....
..... ..... ..... ..... ..... ..... ..... ..... ..... .....
"""


def _parse(table: str) -> dict[str, np.ndarray]:
    glyphs = {" ": np.zeros((GLYPH_H, GLYPH_W), bool)}
    blocks = [b.splitlines() for b in table.strip("\n").split("\n\n")]
    for block in blocks:
        names, rows = block[0], block[1:]
        if len(rows) != GLYPH_H:
            raise ValueError(f"font block {names.split()} has {len(rows)} rows, not {GLYPH_H}")
        for i, ch in enumerate(names.split()):
            cells = [row[ADVANCE * i:ADVANCE * i + GLYPH_W] for row in rows]
            glyphs[ch] = np.array([[c == "#" for c in cell] for cell in cells], bool)
    return glyphs


#: character -> (9, 5) boolean ink mask, for the 95 printable ASCII characters
GLYPHS = _parse(_GLYPHS)


def text_size(lines: list[str], scale: int = 1) -> tuple[int, int]:
    """(height, width) in pixels of ``lines`` drawn by :func:`render`, without margins."""
    if not lines:
        return 0, 0
    width = max(len(line) for line in lines) * ADVANCE - 1
    return (len(lines) * LINE - (LINE - GLYPH_H)) * scale, max(width, 0) * scale


def render(lines: list[str] | str, scale: int = 1) -> np.ndarray:
    """The ink of ``lines`` as a boolean (height, width) mask; each font pixel becomes a
    ``scale`` x ``scale`` block. Lines are left-aligned, :data:`LINE` font pixels apart."""
    lines = [lines] if isinstance(lines, str) else lines
    h, w = text_size(lines)
    ink = np.zeros((h, w), bool)
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            y, x = r * LINE, c * ADVANCE
            ink[y:y + GLYPH_H, x:x + GLYPH_W] = GLYPHS.get(ch, GLYPHS["?"])
    if scale > 1:
        ink = np.repeat(np.repeat(ink, scale, axis=0), scale, axis=1)
    return ink


def wrap(text: str, width: int) -> list[str]:
    """Break ``text`` into lines of at most ``width`` characters, at spaces when it can
    (a word longer than a line is cut)."""
    width = max(1, width)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            while len(word) > width:  # a path longer than the picture is wide
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:width])
                word = word[width:]
            if not line:
                line = word
            elif len(line) + 1 + len(word) <= width:
                line += " " + word
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines
