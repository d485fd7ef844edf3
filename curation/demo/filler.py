"""Generated web filler for the demo's web source: fluent, varied, and worthless.

Content-farm pages (listicles, product blurbs, lifestyle tips) written by templates. Every
sentence is well formed, no line or phrase repeats, there are no banners, symbols or
placeholder words, so the heuristic rules pass them; only a classifier that knows what
reference text reads like can tell them apart. They are what the demo's quality stage is
for: trained on the reference sources against the web, it learns their vocabulary.
"""

from __future__ import annotations

import random

# fmt: off
TOPICS = (
    "home workouts", "meal prep", "budget travel", "skin care", "house plants", "dog training",
    "wedding planning", "small kitchens", "morning routines", "road trips", "side hustles",
    "minimalist living", "backyard gardens", "holiday gifts", "coffee makers", "running shoes",
    "weekend getaways", "healthy snacks", "home office setups", "camping gear", "baby names",
    "hair styles", "phone cases", "summer outfits", "date nights", "bathroom makeovers",
)
ADJECTIVES = (
    "amazing", "incredible", "stunning", "affordable", "simple", "genius", "cozy", "trendy",
    "unbelievable", "perfect", "gorgeous", "must-have", "easy", "awesome", "fabulous", "cute",
)
FEELINGS = ("love", "adore", "swear by", "cannot stop talking about", "are obsessed with")
PEOPLE = (
    "busy moms", "college students", "first-time buyers", "beginners", "the whole family",
    "couples", "pet lovers", "anyone on a budget", "working parents", "every influencer",
)
TIMES = ("this summer", "this year", "right now", "this weekend", "before the holidays",
         "in minutes", "every single day", "all season long")
# fmt: on

SENTENCES = (
    "You will not believe how {adj} these {topic} ideas are.",
    "We tried dozens of {topic} hacks so you do not have to, and the results are {adj}.",
    "Honestly, {people} {feel} {topic}, and it is easy to see why.",
    "If you have been looking for {adj} {topic} tips, you are in the right place.",
    "Number {n} on our list will totally change the way you think about {topic}.",
    "Trust us, your friends will be asking where you found these {adj} {topic} picks.",
    "The best part is that you can get started with {topic} {time}.",
    "Keep scrolling to see our favourite {topic} finds, from cheap to splurge.",
    "Experts agree that {topic} is the {adj} trend everyone is talking about {time}.",
    "Whether you are a pro or just starting out, these {topic} secrets are for you.",
    "Say goodbye to boring {topic} and hello to something truly {adj}.",
    "Our editors picked the {n} most {adj} {topic} products you can buy {time}.",
    "It sounds crazy, but this one {topic} trick saved us hours every week.",
    "Do not forget to save this post so you can come back to these {topic} ideas later.",
    "Ready to upgrade your {topic} game? Here is everything you need to know.",
    "Who knew {topic} could be this {adj}? We are still in shock.",
    "The internet is going wild for {topic}, and honestly we get it.",
    "These {adj} {topic} ideas are perfect for {people}.",
    "We rounded up {n} {adj} ways to make {topic} fun again.",
    "You might be surprised to learn that {topic} does not have to cost a fortune.",
    "Best of all, every one of these {topic} tips is totally free to try {time}.",
    "Let us be real: {people} deserve {topic} that actually works.",
    "Grab a coffee and get comfy, because this {topic} guide is a long one.",
    "Once you try this {adj} approach to {topic}, you will never go back.",
    "Celebrities {feel} this {topic} routine, and now you can too.",
    "Tap the link in our bio for even more {adj} {topic} inspiration.",
    "This is hands down the most {adj} {topic} idea we have seen {time}.",
    "Stop wasting money on {topic} that does not deliver the results you want.",
    "There is a reason {people} keep coming back to these {topic} favourites.",
    "We asked our readers about {topic}, and their answers were {adj}.",
)


def filler_page(rng: random.Random) -> str:
    """Two to four paragraphs of templated listicle prose about three topics (one topic
    in every sentence would trip Gopher's top n-gram rule, which this page must pass)."""
    topics = rng.sample(TOPICS, 3)
    templates = rng.sample(SENTENCES, rng.randint(9, 14))
    sentences = [
        template.format(topic=rng.choice(topics), adj=rng.choice(ADJECTIVES),
                        feel=rng.choice(FEELINGS), people=rng.choice(PEOPLE),
                        time=rng.choice(TIMES), n=rng.randint(5, 25))
        for template in templates
    ]
    paragraphs = rng.randint(2, 4)
    bounds = sorted(rng.sample(range(1, len(sentences)), paragraphs - 1))
    pieces = [sentences[a:b] for a, b in zip([0, *bounds], [*bounds, len(sentences)],
                                             strict=True)]
    return "\n".join(" ".join(piece) for piece in pieces)
