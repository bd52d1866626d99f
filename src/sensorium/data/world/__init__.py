"""Sensorium World: procedural multimodal scenes with exact ground truth (image, depth, segmentation, caption,
Sort-of-CLEVR QA, speech, video, motion trace, tabular row) and splits that test what matters."""

from sensorium.data.world.generate import (
                    PRODUCERS,
                    WorldConfig,
                    make_sample,
                    motion_trace,
                    parse_modalities,
                    scene_row,
                    write_world,
)
from sensorium.data.world.language import QUESTION_TYPES, caption, questions, relation
from sensorium.data.world.render import Rendered, render, render_video
from sensorium.data.world.scene import (
                    COLORS,
                    SHAPES,
                    SIZES,
                    SPLITS,
                    Motion,
                    Obj,
                    Scene,
                    SceneConfig,
                    generate_scene,
                    held_out_combos,
)

__all__ = ["COLORS", "PRODUCERS", "QUESTION_TYPES", "Motion", "Obj", "Rendered", "SHAPES", "SIZES", "SPLITS", "Scene",
           "SceneConfig", "WorldConfig", "caption", "generate_scene", "held_out_combos", "make_sample", "motion_trace",
           "parse_modalities", "questions", "relation", "render", "render_video", "scene_row", "write_world"]
