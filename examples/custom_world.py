"""A custom WorldModel explored in the studio: a camera inside a coloured box room. Inherit BaseWorldModel,
write reset() and step() (kinematics, predict_c2w, describe have defaults), register it, open it by name.

    python3 examples/custom_world.py            # open http://127.0.0.1:8080 and steer with the pad
"""

import threading

import numpy as np

from scenes.factory import make_scene
from studio.app import Studio
from worldmodel.camera import intrinsics_from_fov, look_at_c2w, pixel_rays_camera
from worldmodel.frame import BaseWorldModel, Frame
from worldmodel.registry import register

HALF = np.array([4.0, 1.5, 4.0])  # the room spans -HALF..HALF metres around (0, 1.5, 0)
CENTRE = np.array([0.0, 1.5, 0.0])
FACE_RGB = np.array([[200, 60, 60], [60, 200, 60], [230, 230, 230], [90, 90, 90], [60, 60, 200], [220, 200, 60]])


class BoxRoom(BaseWorldModel):
    name = "boxroom"
    exact_depth = True  # analytic depth: no free-space carving needed

    def __init__(self, width: int = 160, height: int = 120):
        self.K = intrinsics_from_fov(width, height, 70.0)
        self.rays = pixel_rays_camera(self.K, width, height).astype(np.float64)  # (H, W, 3), z = 1

    def render(self, index: int, c2w: np.ndarray, action=None) -> Frame:
        c2w = c2w.copy()
        c2w[:3, 3] = np.clip(c2w[:3, 3], CENTRE - HALF + 0.3, CENTRE + HALF - 0.3)  # stay inside
        d = self.rays @ c2w[:3, :3].T                                     # world ray per pixel, camera z = 1
        with np.errstate(divide="ignore"):
            t = (CENTRE + np.sign(d) * HALF - c2w[:3, 3]) / d             # distance to each wall, per axis
        axis = np.argmin(np.where(d != 0, t, np.inf), axis=-1)          # the wall the ray leaves through
        depth = np.take_along_axis(t, axis[..., None], -1)[..., 0]       # = z-depth because camera z = 1
        face = 2 * axis + (np.take_along_axis(d, axis[..., None], -1)[..., 0] > 0)
        hit = c2w[:3, 3] + depth[..., None] * d
        checker = (np.floor(hit).sum(-1) % 2)[..., None] * 0.25 + 0.75   # 1 m tiles, so motion is visible
        return Frame(index, (FACE_RGB[face] * checker).astype(np.uint8), depth.astype(np.float32), self.K, c2w, action)

    def reset(self, seed, start=None):
        return self.render(0, look_at_c2w(CENTRE, CENTRE + [0.0, 0.0, 1.0]) if start is None else start)

    def step(self, action, context):
        return self.render(context.last.index + 1, self.target_c2w(action, context), action)


register("boxroom", lambda arg, seed, width, height, kinematics: BoxRoom(width or 160, height or 120))  # as a plugin


def open_in_studio(port: int = 8080) -> Studio:
    return Studio(make_scene("boxroom"), port=port)  # (with memory; the server runs in its threads)


if __name__ == "__main__":
    studio = open_in_studio()
    print(f"http://127.0.0.1:{studio.server.get_port()}  (Ctrl-C to stop)")
    threading.Event().wait()
