"""Varied English sentences for the a2v corpus, deterministic by seed.

Three sources, mixed: templates with slots (names, places, objects, numbers,
times, questions), random word strings over a broad vocabulary (phoneme
coverage), and hand-written sentences in the style of real text.
"""

from __future__ import annotations

import random

NAMES = (
    "Margaret", "Oliver", "Priya", "Jonathan", "Zoe", "Mohammed", "Chloe", "Vincent", "Beatrice", "Hugo",
    "Isabella", "Theodore", "Yuki", "Charlotte", "Quentin", "Fatima", "George", "Lucia", "Shawn", "Vera",
    "Ethan", "Judith", "Xavier", "Naomi", "Bruce", "Thelma", "Wendy", "Pablo", "Ursula", "Kofi",
)  # fmt: skip
PLACES = (
    "the library", "Chicago", "the beach", "the office", "Tokyo", "the old bridge", "the museum",
    "the bakery", "Vancouver", "the mountains", "the train station", "Paris", "the garden", "the zoo",
    "the hospital", "Boston", "the airport", "the village square", "the shopping mall", "the harbour",
)  # fmt: skip
OBJECTS = (
    "umbrella", "violin", "bicycle", "sandwich", "telescope", "jacket", "notebook", "pumpkin", "guitar",
    "teapot", "keyboard", "blanket", "mirror", "ticket", "lantern", "wallet", "feather", "cushion",
    "shovel", "thermometer", "rhubarb pie", "cheese board", "fishing rod", "passport", "toothbrush",
)  # fmt: skip
ADJECTIVES = (
    "quiet", "enormous", "shiny", "broken", "cheerful", "purple", "ancient", "fragile", "smooth",
    "thick", "gorgeous", "suspicious", "lovely", "bitter", "fuzzy", "vivid", "jagged", "wealthy",
)  # fmt: skip
VERBS_PAST = (
    "found", "bought", "borrowed", "painted", "fixed", "dropped", "washed", "moved", "watched",
    "measured", "shared", "thanked", "chased", "visited", "juggled", "ordered", "polished", "weighed",
)  # fmt: skip
VERBS = (
    "bring", "choose", "fetch", "check", "show", "push", "pull", "measure", "wash", "fix", "zip",
    "throw", "catch", "judge", "solve", "breathe", "vanish", "whisper", "laugh", "shout",
)  # fmt: skip
TIMES = (
    "at nine thirty", "on Monday", "tomorrow morning", "in July", "last Thursday", "at noon",
    "every weekend", "in the evening", "at 7:45", "on the 3rd of May", "before midnight", "next year",
)  # fmt: skip
WORDS = (
    "apple about above across action afraid after again against age ago agree air all almost alone "
    "along already also always among amount anger animal answer anyone appear April arm army around "
    "arrive art ask asleep attack autumn avoid awake away baby back bad bag ball band bank bar base "
    "basket bath bear beat beauty bed bee beef before begin behind believe bell belong below belt "
    "bench bend berry best better between big bird birth bite black blade blame blind block blood "
    "blow blue board boat body boil bomb bone book boot border born borrow boss both bottle bottom "
    "bowl box boy brain brave bread break breath brick bridge brief bright bring broad brother brown "
    "brush bubble bucket build bulb burn bury bush busy butter button buy cabin cake call calm camera "
    "camp can candle cap car card care carry case cash castle cat cause ceiling cell chain chair chalk "
    "chance change charge cheap cheek chest chicken chief child chin chip choice church circle city "
    "claim class clean clear clever cliff climb clock close cloth cloud club coach coast coat coffee "
    "coin cold collar colour comb come common cook cool copper copy corn corner cotton cough count "
    "country courage cousin cover cow crack crash cream crew crime crop cross crowd crown cry cup "
    "curve cushion cut daily damage dance danger dark daughter day dead deal dear death debt decide "
    "deep deer degree delay depth desert design desk detail dew diamond dinner dirt dish dive doctor "
    "dog dollar door double doubt dove down dozen drama draw dream dress drink drive drop drum dry "
    "duck dull dust duty eagle ear early earth east easy echo edge egg eight elbow elephant empty "
    "enemy engine enjoy enough enter equal error escape evening event exact exit eye face fact fair "
    "fall false family fan farm fast fat father fault fear feast feather feed feel fence fever few "
    "field fifth fight figure film final find fine finger fire first fish five flag flame flash "
    "flat flavour flesh flight float flock floor flour flower fly fog fold food foot force forest "
    "fork form fortune four fox frame free fresh friend frog front frost fruit fuel full fun fur "
    "future gallon game gap garage garden gate gather gaze gentle ghost giant gift girl give glad "
    "glass glove glue goat gold golf good goose grab grain grape grass grave gravy great green grey "
    "grief ground group grow guard guess guest guide gun habit hair half hall hammer hand happy "
    "harbour hard harm hat hate have hawk head health heap heart heat heavy hedge height hello help "
    "hen herb hero hide high hill hint history hobby hold hole holiday hollow home honey hook hope "
    "horn horse host hotel hour house huge human humour hunger hurry husband ice idea inch ink "
    "island jacket jam jar jaw jazz jelly jewel job join joke journey joy judge juice jump jungle "
    "just keen keep kettle key kick kid kind king kiss kitchen kite knee knife knock knot know "
    "label ladder lady lake lamb lamp land large laser late laugh lawn lazy lead leaf lean learn "
    "leather leave lemon length lesson letter level lid life lift light limit line lion lip liquid "
    "list listen little live load loaf local lock lonely long look loose lose loud love low luck "
    "lunch machine magic mail main make male map marble march mark market mask match maze meal "
    "measure meat medal melon memory metal middle milk mind mint minute mirror miss mist mix model "
    "moment money monkey month mood moon morning mother motor mountain mouse mouth move much mud "
    "muscle music nail name narrow nation nature near neck needle nephew nerve nest net never news "
    "nice night nine noble noise north nose note novel number nurse nut oak ocean odd offer oil old "
    "olive onion open orange order oven owl own pack page pain paint pair palace pale palm pan paper "
    "parade parent park party pass past path peace peach pearl pen pencil people pepper piano pick "
    "picture pie piece pig pillow pilot pin pipe pizza place plan plant plate play pleasure plenty "
    "plum pocket poem point poison pole polite pond pool poor pork potato pound powder power praise "
    "pretty price pride prince print prize proof proud pull pump punch pupil puppy purple purse "
    "push puzzle quarter queen question quick quiet quilt quite rabbit race radio rain raise range "
    "rare rat raw reach ready reason record red relax rhythm rice rich riddle ride right ring ripe "
    "river road roar robot rock roof room root rope rose rough round row royal rubber rug rule run "
    "rush sad safe sail salad salt same sand save saw scale scarf school science score scratch "
    "screen sea season seat second secret seed shade shadow shake shallow shape share sharp sheep "
    "shelf shell shine ship shirt shock shoe shop short shoulder shout shower shy sick side sight "
    "silk silver simple sing sister six size skate skill skin skirt sky sleep sleeve slice slide "
    "slow small smell smile smoke smooth snack snake snow soap soft soil soldier song soon sorry "
    "soup south space spare spark speak speed spell spend spice spider spirit spoon sport spring "
    "square squeeze stable staff stage stair stamp star station steam steel step stick still stone "
    "storm story stove strange straw stream street string strong student sugar summer sun supper "
    "sure surprise swan sweater sweet swim switch sword table tail talk tall taste tea teacher "
    "team tear teeth tent thank thick thief thin thing think thirsty thought thousand thread three "
    "throat thumb thunder ticket tide tiger timber tiny tired toast today toe tomato tongue tool "
    "tooth top torch touch tower town toy track trade train travel treasure tree trick trouble "
    "truck true trumpet trust truth tube tulip tune tunnel turn twelve twin umbrella uncle under "
    "unit until upper urge useful usual valley value van vase vast velvet verse very vessel view "
    "village violet visit voice vote voyage wage wagon waist wait wake walk wall wander want warm "
    "wash waste watch water wave wax weak wealth weather wedding week weight welcome west wet whale "
    "wheat wheel whip whisper white whole wide wife wild willow win wind window wine wing winter "
    "wire wise wish witch wolf woman wonder wood wool word work world worm worry wrap wreck wrist "
    "write wrong yard yawn year yellow yes yesterday young youth zebra zero zone zoo"
).split()
REAL_TEXT = (
    "The meeting has been moved to Thursday afternoon because the projector is broken.",
    "Could you tell me how to get to the nearest pharmacy from here?",
    "I think the soup needs a little more salt, but the bread is perfect.",
    "Thank you for calling; your order will arrive within three to five business days.",
    "She whispered something to her brother and then burst out laughing.",
    "Please remember to switch off the lights and lock the back door.",
    "The weather forecast says heavy rain with strong winds along the coast.",
    "Honestly, I have no idea why the printer keeps jamming every morning.",
    "Our flight was delayed by two hours, so we missed the connecting train.",
    "He plays the cello beautifully, although he only started last year.",
    "What would you like to drink with your meal this evening?",
    "The children built an enormous sandcastle before the tide came in.",
    "Yes, that sounds wonderful. Let's do it again next week!",
    "Measure twice and cut once, as my grandfather always used to say.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar and oxygen.",
    "I'm sorry, I didn't quite catch that. Could you say it again?",
    "The museum's new exhibition features paintings from the seventeenth century.",
    "Turn left at the roundabout, then take the second exit onto Maple Street.",
    "My phone battery died halfway through the video call.",
    "Fresh strawberries, thick cream and a pinch of sugar: that's the whole recipe.",
    "The judge asked the witness to describe exactly what she saw that night.",
    "Wow, I can't believe how quickly this year has gone by.",
    "If you need anything at all, just let me know and I'll help.",
    "Several thousand volunteers cleaned the beaches over the long weekend.",
    "The vaccine trial enrolled nearly four hundred participants in six cities.",
    "Oh no, I think I left my keys in the car again.",
    "Breathe in slowly through your nose, hold it, and breathe out through your mouth.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Have you ever wondered why the sky looks blue during the day?",
    "We should probably leave now if we want to beat the traffic.",
    "Jazz musicians often improvise long solos over a simple chord progression.",
    "The quick brown fox jumps over the lazy dog.",
    "Unfortunately, the shop closes at six on Sundays.",
    "Her voice was calm, but her hands were shaking.",
    "Mix the flour and butter until the dough feels smooth and elastic.",
    "Excuse me, is this seat taken?",
    "Every morning he jogs along the river before breakfast.",
    "The treasure map showed a cave hidden behind the waterfall.",
    "Good morning! How can I help you today?",
    "I'd love to, but I've already promised to visit my parents.",
    "Zebras, giraffes and elephants gathered around the watering hole.",
    "Please speak clearly after the beep and leave your number.",
    "That's a fascinating question, and the answer might surprise you.",
    "The software update fixes several bugs and improves battery life.",
    "Shh, the baby is finally asleep.",
    "They moved to a small village in the north of Scotland.",
    "Which would you prefer, the blue jacket or the green one?",
    "My favourite season is autumn, when the leaves turn red and gold.",
    "The detective noticed a faint smell of smoke in the hallway.",
    "Just a moment, I'm checking the schedule for you.",
)
_TEMPLATES = (
    "{name} {verb_past} a {adj} {obj} in {place} {time}.",
    "Did {name} really {verb} the {obj} {time}?",
    "Why would anyone {verb} a {adj} {obj}?",
    "I think {name} left the {obj} at {place}.",
    "Meet me at {place} {time}, and bring the {obj}.",
    "There are {num} {obj}s waiting for you at {place}.",
    "{name} and {name2} {verb_past} {num} {adj} {obj}s.",
    "How much does the {adj} {obj} cost? About {num} dollars.",
    "Please {verb} the {obj} before {name} gets back.",
    "The {obj} was {adj}, so {name} {verb_past} it.",
    "Is it true that {name} lives near {place}?",
    "Call {name} {time} and ask about the {obj}.",
    "Oh, {name}, you {verb_past} my {adj} {obj}!",
    "We counted {num} people at {place} {time}.",
    "Flight {num} to {place} leaves {time}.",
    "My phone number is {digits}.",
    "{name} said: never {verb} a {obj} {time}.",
    "What happened to the {adj} {obj} from {place}?",
    "Honestly, {name}, the {obj} is {adj}.",
    "The year {year} was when {name} {verb_past} the {obj}.",
)


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return str(rng.randint(2, 99))
    if kind < 0.8:
        return str(rng.randint(100, 9999))
    return f"{rng.randint(1, 99)}.{rng.randint(0, 9)}"


def _template(rng: random.Random) -> str:
    t = rng.choice(_TEMPLATES)
    name, name2 = rng.sample(NAMES, 2)
    return t.format(
        name=name,
        name2=name2,
        verb=rng.choice(VERBS),
        verb_past=rng.choice(VERBS_PAST),
        adj=rng.choice(ADJECTIVES),
        obj=rng.choice(OBJECTS),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
        num=_number(rng),
        digits=" ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(4, 7))),
        year=rng.randint(1890, 2030),
    )


def _word_string(rng: random.Random) -> str:
    n = rng.randint(3, 12)
    words = [rng.choice(WORDS) for _ in range(n)]
    if n > 6 and rng.random() < 0.5:
        words[rng.randint(2, n - 3)] += ","
    end = rng.choice([".", ".", ".", "?", "!"])
    return " ".join(words).capitalize() + end


def generate_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct sentences (hand-written ones first, then templates and word strings)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    pool = list(REAL_TEXT)
    rng.shuffle(pool)
    for s in pool[: min(len(pool), count)]:
        out.append(s)
        seen.add(s)
    attempts = 0
    while len(out) < count and attempts < count * 50:
        attempts += 1
        s = _template(rng) if rng.random() < 0.55 else _word_string(rng)
        if rng.random() < 0.12:  # two sentences in one utterance
            s = s + " " + (_template(rng) if rng.random() < 0.5 else _word_string(rng))
        if s not in seen:
            seen.add(s)
            out.append(s)
    rng.shuffle(out)
    return out
