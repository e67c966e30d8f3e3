"""A small synthetic XSum-format sample (BBC-like news and sport stories, written from templates).

    python scripts/make_synthetic_xsum.py [OUT_DIR]      (default: data/xsum-synthetic)

Writes `train.jsonl`, `dev.jsonl`, `test.jsonl` (one `{"document", "summary", "id"}` object a line,
the layout `data.files` reads) and `urls.txt` (archived-URL lines in the XSum authors' format, one
per article, so the news-to-sports and within-news extrapolation splits run on it too). The text
is generated here from templates and word lists (no BBC content), deterministically: the shipped
copy in data/xsum-synthetic is this script's output (tests/data/test_synthetic_xsum.py checks it).

As in XSum, the summary states the story's main facts in one sentence that does not occur in
the document; the document gives the same facts in other words, surrounded by filler, so a small
model can learn something while the pipeline (truncation, decoding, ROUGE) runs as on real XSum.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SIZES = {"train": 400, "dev": 60, "test": 60}
FIRST_ID = 91_000_001
SEED = 2018  # XSum's year

TOWNS = [
    "Swansea",
    "Leeds",
    "Derby",
    "Inverness",
    "Carlisle",
    "Norwich",
    "Exeter",
    "Belfast",
    "Bangor",
    "York",
]
COMPANIES = ["Northwind", "Carrow Foods", "Brightline", "Tarn Steel", "Kestrel Air", "Halden Motors"]
TEAMS = ["Rovers", "Athletic", "United", "City", "Wanderers", "Albion", "Town", "County"]
PLAYERS = ["James Pryce", "Liam Doyle", "Sam Okafor", "Ryan Hale", "Owen Marsh", "Karl Finch"]
COUNTRIES = ["Chile", "Nepal", "Portugal", "Kenya", "Vietnam", "Canada", "Peru", "Greece"]

# topic → (BBC category path, story template, summary template, slot word lists)
TOPICS = {
    "business": (
        "news/business",
        "The firm said {number} posts would go at its {town} plant over the next year. Managers blamed "
        "{reason} and said the site would stay open. {company} employs about {staff} people in the area.",
        "{company} is to cut {number} jobs at its {town} plant because of {reason}.",
        {"reason": ["rising energy costs", "falling orders", "a drop in exports", "higher interest rates"]},
    ),
    "health": (
        "news/health",
        "The new {facility} in {town} will offer {service} to about {number} patients a year. Health "
        "officials said it would cut waiting times. It cost {cost} million pounds to build.",
        "A new {facility} offering {service} has opened in {town}.",
        {
            "facility": ["clinic", "hospital wing", "treatment centre", "health hub"],
            "service": ["cancer care", "eye surgery", "mental health support", "kidney dialysis"],
        },
    ),
    "uk": (
        "news/uk",
        "Councillors in {town} voted on the plans for a {project} on {day}. There were {number} letters of "
        "objection from residents. The scheme has now been {decision}.",
        "Plans for a {project} in {town} have been {decision} by councillors.",
        {
            "project": ["wind farm", "housing estate", "bypass", "retail park", "new school"],
            "decision": ["approved", "rejected", "delayed"],
        },
    ),
    "world": (
        "news/world-europe",
        "Officials in {country} said {number} people had left their homes. The {disaster} struck the "
        "{region} region overnight. Rescue teams are still working in the area.",
        "{number} people have been evacuated in {country} after a {disaster}.",
        {
            "disaster": ["flood", "wildfire", "earthquake", "storm"],
            "region": ["northern", "southern", "eastern", "western", "coastal"],
        },
    ),
    "technology": (
        "news/technology",
        "{company} showed the {gadget} at an event on {day}. The company says it can {ability}. It will go "
        "on sale next year for {cost} hundred pounds.",
        "{company} has unveiled a {gadget} that it says can {ability}.",
        {
            "gadget": ["smart watch", "folding phone", "delivery drone", "home robot"],
            "ability": ["track sleep", "charge in minutes", "translate speech", "map a house"],
        },
    ),
    "football": (
        "sport/football",
        "{player} scored twice for {team} at {town} on {day}. {team2} had taken an early lead. The win lifts "
        "{team} to {position} in the table, {number} points clear.",
        "{player} scored twice as {team} came from behind to beat {team2}.",
        {"position": ["second", "third", "fourth", "fifth"]},
    ),
    "cricket": (
        "sport/cricket",
        "{player} made {number} not out as {team} batted through the first day against {team2} at {town}. "
        "Rain stopped play for an hour after lunch. {team} closed on {runs} for {wickets}.",
        "{player} made an unbeaten {number} as {team} reached {runs} for {wickets} against {team2}.",
        {"wickets": ["three", "four", "five", "six"]},
    ),
}
FILLER = [
    "A spokesperson said more details would be given in the coming weeks.",
    "The announcement was welcomed by some local groups.",
    "Others said they had not been told in advance.",
    "It is the second such announcement this year.",
    "Further updates are expected later this month.",
    "Local people have been asked to share their views.",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def story(rng: random.Random, topic: str) -> tuple[str, str]:
    _, body, summary, words = TOPICS[topic]
    team, team2 = rng.sample(TEAMS, 2)
    slots = {
        "town": rng.choice(TOWNS),
        "company": rng.choice(COMPANIES),
        "team": f"{rng.choice(TOWNS)} {team}",
        "team2": f"{rng.choice(TOWNS)} {team2}",
        "player": rng.choice(PLAYERS),
        "country": rng.choice(COUNTRIES),
        "day": rng.choice(DAYS),
        "number": str(rng.randint(12, 480)),
        "staff": str(rng.randint(500, 3000)),
        "cost": str(rng.randint(2, 60)),
        "runs": str(rng.randint(180, 420)),
        **{name: rng.choice(options) for name, options in words.items()},
    }
    filler = rng.sample(FILLER, rng.randint(1, 3))
    sentences = [body.format(**slots), *filler]
    return "\n".join(sentences), summary.format(**slots)


def build() -> tuple[dict[str, list[dict[str, str]]], list[str]]:
    rng = random.Random(SEED)
    splits: dict[str, list[dict[str, str]]] = {}
    urls, next_id = [], FIRST_ID
    for split, size in SIZES.items():
        records = []
        for _ in range(size):
            topic = rng.choice(sorted(TOPICS))
            document, summary = story(rng, topic)
            records.append({"document": document, "summary": summary, "id": str(next_id)})
            separator = "/" if TOPICS[topic][0].startswith("sport") else "-"
            stamp = 20170101000000 + next_id - FIRST_ID
            urls.append(
                f"http://web.archive.org/web/{stamp}/http://www.bbc.com/{TOPICS[topic][0]}{separator}{next_id}"
            )
            next_id += 1
        splits[split] = records
    return splits, urls


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    splits, urls = build()
    for split, records in splits.items():
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        (out / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    (out / "urls.txt").write_text("\n".join(urls) + "\n", encoding="utf-8")
    print(f"wrote {', '.join(f'{s} {len(r)}' for s, r in splits.items())} articles and urls.txt to {out}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "data" / "xsum-synthetic"
    )
