"""Issue 41 on image files: only regular files are opened (a FIFO would block, a device never end), and an
image too elongated to resize (1 × 1,000,000) is refused by its header, never decoded or expanded."""

import os

import pytest
from PIL import Image

from effnet.data.images import MAX_ASPECT, ImageTooNarrow, open_image, read_rgb
from effnet.errors import UserError

fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


@fifos
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"image .*f\.jpg is a FIFO, not a regular file"):
        read_rgb(fifo)
    with pytest.raises(UserError, match="FIFO"):
        open_image(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused():
    with pytest.raises(UserError, match="image /dev/zero is a character device"):
        read_rgb("/dev/zero")


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="is a folder, not a file"):
        read_rgb(tmp_path)


def test_a_missing_file_is_still_no_such_file(tmp_path):
    with pytest.raises(UserError, match="missing.png: no such file"):
        read_rgb(tmp_path / "missing.png")


@pytest.mark.parametrize("size", [(1, 1_000_000), (1_000_000, 1), (5, MAX_ASPECT * 5 + 1)])
def test_an_elongated_image_is_refused_by_its_header(tmp_path, size):
    path = tmp_path / "thin.png"
    Image.new("L", size).save(path)
    with pytest.raises(ImageTooNarrow, match=rf"thin\.png has {size[0]}×{size[1]} pixels, more elongated") as caught:
        read_rgb(path)
    assert str(caught.value).count("thin.png") == 1


def test_an_image_at_the_aspect_bound_is_read(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (MAX_ASPECT * 3, 3)).save(path)
    assert read_rgb(path).size == (MAX_ASPECT * 3, 3)
