"""The parts of the demo corpus (`curation.demo_corpus`): real Python text, hand-written
foreign prose, web junk generators, and controlled edits (near copies, mojibake)."""
