"""Generators of the low-quality pages a web crawl is full of, for the demo's web source.

Each generator takes a seeded `random.Random` and returns one page. The kinds mirror the
rules meant to catch them: keyword spam and SEO templates (quality classifier), cookie and
JavaScript banners (C4 line rules), lorem ipsum (C4), symbol soup and bullet lists (Gopher
quality), repeated lines, paragraphs and n-grams (Gopher repetition).
"""

from __future__ import annotations

import random

# fmt: off
SPAM_KEYWORDS = (
    "cheap flights", "best price", "buy now", "free shipping", "discount code", "online casino",
    "weight loss pills", "crypto bonus", "cheap hotels", "car insurance quote", "payday loans",
    "work from home", "replica watches", "free followers", "top rated", "limited offer",
)
# fmt: on

SEO_TEMPLATES = (
    "Looking for the best {kw}? You have come to the right place for {kw}.",
    "Our {kw} guide tells you everything about {kw} in {year}.",
    "Top 10 {kw} deals for {year}: compare {kw} prices today!",
    "Click here to get {kw} now and save up to {pct}% on {kw}.",
    "Why pay more for {kw}? The cheapest {kw} online is here.",
    "Read our honest {kw} reviews before you buy {kw}.",
    "Thousands of happy customers trust us for {kw}.",
    "Don't miss our exclusive {kw} offer, only available today.",
)

NAVIGATION_LINES = (
    "Home | About Us | Contact | Privacy Policy | Terms of Service",
    "Copyright © {year} {brand}. All rights reserved.",
    "Share on Facebook | Share on Twitter | Pin it | Email",
    "Related posts",
    "Sign up for our newsletter",
    "Powered by {brand} CMS",
)

BOILERPLATE_LINES = (
    "This website uses cookies to ensure you get the best experience on our website.",
    "By continuing to browse this site you agree to our use of cookies and our privacy policy.",
    "We use cookies to personalise content and ads. Accept all cookies",
    "Please enable JavaScript in your browser to view this page.",
    "JavaScript is required for this site to work properly.",
    "You must have javascript enabled to use this feature.",
    "Read our cookie policy and terms of use before continuing.",
    "Your browser does not support JavaScript or it is disabled.",
)

BRANDS = ("ShopRight", "BestDealz", "WebHub", "TopPicks", "SiteMaster", "ClickNow")

LOREM_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum"
).split()

SYMBOL_TOKENS = tuple(
    """
# ## ### ... @@ $$$ && %% ||| -> << >> *** ~~ +++ == ^^ [] {} (!) // #tag ...? !!! :::
""".split()
)

BULLET_MARKERS = ("•", "-", "*", "·", "▪")

# fmt: off
BULLET_PHRASES = (
    "free delivery", "new arrivals", "gift cards", "customer service", "order tracking",
    "size guide", "returns", "store locator", "special offers", "best sellers", "sale items",
    "men's shoes", "women's shoes", "kids' clothing", "accessories", "home and garden",
    "electronics", "toys and games", "sports gear", "beauty products", "pet supplies",
)
# fmt: on


def keyword_spam_page(rng: random.Random) -> str:
    """Lines of stuffed keywords, the classic doorway page."""
    keywords = rng.sample(SPAM_KEYWORDS, 4)
    lines = []
    for _ in range(rng.randint(12, 24)):
        words = [rng.choice(keywords) for _ in range(rng.randint(5, 10))]
        lines.append(" ".join(words) + rng.choice(("", " !!!", " best", " online", " 2024")))
    return "\n".join(lines)


def seo_page(rng: random.Random) -> str:
    """Templated SEO copy around one keyword, wrapped in navigation boilerplate."""
    keyword = rng.choice(SPAM_KEYWORDS)
    fill = {"kw": keyword, "year": rng.randint(2015, 2025), "pct": rng.choice((30, 50, 70, 90))}
    brand = {"year": fill["year"], "brand": rng.choice(BRANDS)}
    body = [rng.choice(SEO_TEMPLATES).format(**fill) for _ in range(rng.randint(10, 18))]
    head = [NAVIGATION_LINES[0]]
    tail = [line.format(**brand) for line in rng.sample(NAVIGATION_LINES[1:], 3)]
    return "\n".join(head + body + tail)


def boilerplate_page(rng: random.Random) -> str:
    """Nothing but banners and navigation: what is left of a page rendered without scripts."""
    brand = {"year": rng.randint(2015, 2025), "brand": rng.choice(BRANDS)}
    lines = rng.sample(BOILERPLATE_LINES, 4) + [
        line.format(**brand) for line in rng.sample(NAVIGATION_LINES, 3)
    ]
    rng.shuffle(lines)
    return "\n".join(lines)


def with_boilerplate_lines(page: str, rng: random.Random) -> str:
    """A decent page with cookie/JavaScript banner lines at its top and bottom."""
    top, bottom = rng.sample(BOILERPLATE_LINES, 2)
    return f"{top}\n{page}\n{bottom}"


def lorem_ipsum_page(rng: random.Random) -> str:
    """Placeholder text left in a published template."""
    paragraphs = ["Lorem ipsum dolor sit amet, consectetur adipiscing elit."]
    for _ in range(rng.randint(3, 6)):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            words = [rng.choice(LOREM_WORDS) for _ in range(rng.randint(6, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def symbol_soup_page(rng: random.Random) -> str:
    """Mostly symbols and hashtags with a few stray words (Gopher symbol-to-word ratio)."""
    words = ("click", "more", "here", "new", "post", "link", "page", "top")
    lines = []
    for _ in range(rng.randint(8, 16)):
        tokens = [
            rng.choice(words) if rng.random() < 0.3 else rng.choice(SYMBOL_TOKENS)
            for _ in range(rng.randint(6, 14))
        ]
        lines.append(" ".join(tokens))
    return "\n".join(lines)


def bullet_page(rng: random.Random) -> str:
    """A page of bullet-point links, as menus and sitemaps render (Gopher bullet rule)."""
    marker = rng.choice(BULLET_MARKERS)
    count = rng.randint(15, len(BULLET_PHRASES))
    return "\n".join(f"{marker} {phrase}" for phrase in rng.sample(BULLET_PHRASES, count))


def repetitive_page(rng: random.Random, sentences: list[str]) -> str:
    """A page whose lines, paragraphs or phrases repeat (Gopher repetition rules).

    `sentences` supplies real prose, so only the repetition gives the page away.
    """
    style = rng.choice(("lines", "paragraphs", "phrases"))
    if style == "lines":
        line = rng.choice(sentences)
        others = rng.sample(sentences, 3)
        return "\n".join(others[:1] + [line] * rng.randint(8, 20) + others[1:])
    if style == "paragraphs":
        paragraph = " ".join(rng.sample(sentences, 3))
        return "\n\n".join([paragraph] * rng.randint(4, 8) + [rng.choice(sentences)])
    phrase = " ".join(rng.choice(sentences).split()[:4])
    filler = " ".join([phrase] * rng.randint(20, 40))
    return f"{rng.choice(sentences)} {filler} {rng.choice(sentences)}"
