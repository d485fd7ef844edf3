"""The normalize stage's helpers: ftfy applied line by line, and the fast mojibake scan
that decides which lines ftfy must see."""
