"""World scenes: every answer and caption relation checked against geometry (recomputed here, independently of
the generator), and every rendered modality checked against the scene graph it came from."""

import re

import numpy as np
import pytest

from sensorium.data.world import (COLORS, SHAPES, WorldConfig, generate_scene, make_sample, motion_trace, render,
                                  render_video)
from sensorium.data.world.language import QUESTION_TYPES

ALL_BUT_AUDIO = ("image", "depth", "segmentation", "text", "qa", "video", "timeseries", "tabular")


def _geometry_answer(scene, qa):
    """The answer computed from object coordinates alone, from the question's wording."""
    q = qa["question"]
    colour = next((c for c in COLORS if re.search(rf"\b{c}\b", q)), None)
    shape = next((s for s in SHAPES if re.search(rf"\b{s}s?\b", q)), None)
    objs = scene.objects
    ref = next((o for o in objs if o.color == colour), None)
    kind = qa["type"]
    if kind == "shape":
        return ref.shape
    if kind == "color":
        (only,) = [o for o in objs if o.shape == shape]  # the question must name a unique shape
        return only.color
    if kind == "position":
        return ("left" if ref.x < 0.5 else "right") if "left or the right" in q else ("top" if ref.y < 0.5 else "bottom")
    if kind in ("closest", "furthest"):
        dist = {o.id: np.hypot(o.x - ref.x, o.y - ref.y) for o in objs if o is not ref}
        pick = (min if kind == "closest" else max)(dist, key=dist.get)
        other = scene.obj(pick)
        return other.shape if "shape of" in q else other.color
    if kind == "count":
        target = ref.shape if ref is not None else shape
        return str(sum(o.shape == target for o in objs))
    if kind == "motion":
        mover = scene.obj(scene.motion.object_id)
        return scene.motion.direction if "Which way" in q else mover.name
    raise AssertionError(kind)


def test_every_question_type_is_answered_by_geometry():
    seen = set()
    for index in range(150):
        sample = make_sample(index, "train", 7, WorldConfig(max_objects=6), ("qa", "video"))
        scene = generate_scene(7, "train", index, WorldConfig(max_objects=6).scene_config())
        for qa in sample["qa"]:
            assert qa["answer"] == _geometry_answer(scene, qa), qa
            assert qa["family"] == QUESTION_TYPES[qa["type"]]
            seen.add(qa["type"])
    assert seen == set(QUESTION_TYPES)


def test_relational_questions_skip_single_object_scenes():
    sample = make_sample(0, "train", 0, WorldConfig(min_objects=1, max_objects=1), ("qa",))
    types = {qa["type"] for qa in sample["qa"]}
    assert "closest" not in types and "furthest" not in types and {"shape", "position", "count"} <= types


def test_caption_relations_and_objects_match_geometry():
    for index in range(60):
        sample = make_sample(index, "val", 3, WorldConfig(), ("text",))
        scene = generate_scene(3, "val", index)
        for rel in sample["json"]["relations"]:
            a, b = scene.obj(rel["subject"]), scene.obj(rel["object"])
            dx, dy = a.x - b.x, a.y - b.y
            expected = ("left of" if dx < 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
            assert rel["relation"] == expected
            assert f"The {a.color} {a.shape} is {expected} the {b.color} {b.shape}." in sample["text"]
        for obj in scene.objects:
            assert f"{obj.color} {obj.shape}" in sample["text"]


def test_same_seed_same_sample_other_seed_other_sample():
    a = make_sample(5, "train", 11, WorldConfig(), ALL_BUT_AUDIO)
    b = make_sample(5, "train", 11, WorldConfig(), ALL_BUT_AUDIO)
    c = make_sample(5, "train", 12, WorldConfig(), ALL_BUT_AUDIO)
    assert a["json"] == b["json"] and a["text"] == b["text"] and a["qa"] == b["qa"]
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    assert a["json"] != c["json"]


def test_render_agrees_with_scene_graph():
    size = 64
    for index in range(20):
        scene = generate_scene(1, "train", index)
        out = render(scene, size)
        image = out.image.astype(int)
        for obj in scene.objects:
            mask = out.segmentation == obj.id
            assert mask.sum() > 10, "every object is visible (objects never overlap)"
            ys, xs = np.nonzero(mask)
            assert abs(xs.mean() + 0.5 - obj.x * size) < 0.8 and abs(ys.mean() + 0.5 - obj.y * size) < 0.8
            assert np.all(image[mask] == COLORS[obj.color])  # plain texture, no noise
            assert np.allclose(out.depth[mask], obj.z)
        background = out.segmentation == 0
        assert np.all(out.depth[background] == 1.0)
        assert np.all(image[background] == scene.background)  # no clutter by default


def test_video_shows_the_motion_and_trace_follows_it():
    config = WorldConfig(video_frames=6, ts_steps=40)
    for index in range(8):
        scene = generate_scene(2, "test", index)
        frames = render_video(scene, 64, config.video_frames)
        assert np.array_equal(frames[0], render(scene, 64).image)  # frame 0 is the still
        mover = scene.obj(scene.motion.object_id)
        colour = np.array(COLORS[mover.color])
        centres = []
        for frame in frames:
            ys, xs = np.nonzero(np.all(frame.astype(int) == colour, axis=-1))
            centres.append((xs.mean() + 0.5, ys.mean() + 0.5))
        (x0, y0), (x1, y1) = centres[0], centres[-1]
        assert abs(x1 - scene.motion.end[0] * 64) < 0.8 and abs(y1 - scene.motion.end[1] * 64) < 0.8
        dx, dy = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[scene.motion.direction]
        assert (x1 - x0) * dx + (y1 - y0) * dy > 5
        trace = motion_trace(scene, config)
        seconds = np.linspace(0, config.video_frames / config.fps, config.ts_steps)
        assert np.allclose(trace[[0, -1], :2], [scene.motion.start, scene.motion.end], atol=1e-6)
        inner = slice(1, -1)  # np.gradient is one-sided at the ends
        assert np.allclose(np.gradient(trace[:, 0], seconds)[inner], trace[inner, 2], atol=0.01)
        assert np.allclose(np.gradient(trace[:, 3], seconds)[inner], trace[inner, 5], atol=0.05)


def test_sample_modalities_and_metadata():
    sample = make_sample(4, "train", 0, WorldConfig(texture=True, clutter=3, noise=0.05), ALL_BUT_AUDIO)
    scene = generate_scene(4, "train", 0)  # different stream: keys must not be swapped
    assert sample["__key__"] == "train-00000004" and scene.index == 0
    assert sample["image"].size == (64, 64) and sample["depth"].shape == (64, 64)
    assert sample["video"].frames.shape == (8, 64, 64, 3) and sample["timeseries"].shape == (32, 6)
    row, meta = sample["tabular"], sample["json"]
    assert row["n_objects"] == len(meta["objects"]) and row["direction"] == meta["motion"]["direction"]
    assert meta["motion_caption"] in sample["text"]  # motion is described when video/timeseries are present
    assert "background" not in row and "voice" not in row


def test_unknown_split_and_modality_are_clear_errors():
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        make_sample(0, "nope")
    with pytest.raises(ValueError, match="World cannot make \\['smell'\\]"):
        make_sample(0, "train", modalities=("smell",))
