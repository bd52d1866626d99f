import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from sensorium.data.builders.clipart import (ClipartConfig, build, is_placeholder_title, make_caption,
                                             name_from_filename, parse_metadata, split_of)
from sensorium.data.shards import iter_samples

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="40" height="30">
<metadata><rdf:RDF><cc:Work rdf:about="">
<dc:title>{title}</dc:title>
<dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
<cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>{language}
</cc:Work></rdf:RDF></metadata>
<rect x="5" y="5" width="{w}" height="20" fill="{colour}"/>
</svg>"""


def write_svg(path: Path, title: str, keywords=(), creator="Jane Doe", colour="red", w=30, lang="") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kws = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    language = f"<dc:language>{lang}</dc:language>" if lang else ""
    path.write_text(SVG.format(title=title, keywords=kws, creator=creator, colour=colour, w=w, language=language))


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "svg"
    write_svg(root / "animals" / "cat_jane_doe_01.svg", "Cat", ["animal", "pet"], colour="orange")
    write_svg(root / "animals" / "dog_jane_doe_01.svg", "Clipart by Jane Doe - dog", ["animal"], colour="brown", w=25)
    write_svg(root / "food" / "apple_jane_doe_01.svg", "Manzana", ["fruit", "food"], colour="green", w=20, lang="es")
    write_svg(root / "food" / "copy" / "apple_jane_doe_01.svg", "Manzana", ["fruit", "food"], colour="green", w=20, lang="es")
    write_svg(root / "shapes" / "blank.svg", "Empty", ["shape"], colour="white")
    (root / "shapes" / "broken.svg").write_text("<svg><rect")  # unparseable
    return root


def test_metadata_and_caption_rules():
    meta = parse_metadata(SVG.format(title="Clipart by Nicu - arrow08_4", keywords="<rdf:li>shape</rdf:li>",
                                     creator="Nicu Buculei", colour="red", w=3, language=""))
    assert meta["title"].startswith("Clipart by") and meta["keywords"] == ["shape"]
    assert is_placeholder_title(meta["title"], meta, Counter(), 8)
    assert name_from_filename("lightbulb_jon_phillips_01", "Jon Phillips") == "lightbulb"
    cap = make_caption(meta, "arrow08_4", ["shapes", "arrows"], Counter(), 8)
    assert cap.startswith("arrow") and "nicu" not in cap and "shape" in cap
    # untranslated titles fall back to the file name; repeated words are not repeated
    es = {"title": "Manzana", "keywords": ["fruit", "apple"], "creator": "", "license": "", "language": "es"}
    assert make_caption(es, "apple", ["food"], Counter(), 8) == "apple, fruit, food"


def test_split_is_a_pure_function_of_the_key():
    splits = Counter(split_of(f"key{i}") for i in range(2000))
    assert split_of("animals_cat") == split_of("animals_cat")
    assert 0.75 < splits["train"] / 2000 < 0.85 and splits["val"] > 100 and splits["test"] > 100


def _digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


def test_build_counts_skips_and_is_deterministic(source, tmp_path):
    reports = []
    for name in ("a", "b"):
        reports.append(build(ClipartConfig(source=str(source), out=str(tmp_path / name), workers=2, image_size=64),
                             progress=False))
    report = reports[0]
    assert report["written"] == 3  # cat, dog, apple
    assert report["skipped"]["duplicate_file"] == 1
    assert report["skipped"]["render_failed"] == 2  # blank + broken, named in failures
    assert any("broken" in f for f in report["failures"])
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    samples = list(iter_samples(tmp_path / "a"))
    assert {s["text"].split(",")[0] for s in samples} == {"cat", "dog", "apple"}
    for s in samples:
        assert s["image"].size == (64, 64) and s["audio"].seconds > 0.2
        assert s["json"]["license"].endswith("PublicDomain") and s["json"]["voice"]["voice"]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["written"] == 3


def test_missing_source_says_what_to_install(tmp_path):
    from sensorium.core.errors import MissingDependency

    with pytest.raises(MissingDependency, match="apt-get install -y openclipart-svg"):
        build(ClipartConfig(source=str(tmp_path / "nope"), out=str(tmp_path / "out")), progress=False)
