"""Names of the marker files under OUT that one module writes and others read."""

# A finished step's manifest: OUT/stages/NN_<stage>/, OUT/curated/ and OUT/tokens/ each
# hold one, written last and atomically (its key says which inputs it was made from).
STEP_MANIFEST = "_manifest.json"
