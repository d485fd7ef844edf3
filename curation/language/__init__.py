"""The language stage's helpers: langdetect's profiles packed for scoring in bulk."""
