"""The benchmarks TADA is evaluated on, each with its domains, classes, archives and on-disk layout.

A `DatasetSpec` knows where its official archives live (URLs, checksums), how the extracted release is laid out,
and how to read one domain of it into labelled `Sample` s with the splits the benchmark defines. Office-31,
Office-Home and ImageCLEF-DA define no train/test split: the standard unsupervised protocol trains on every source
image (labelled) and every target image (unlabelled) and reports accuracy on all target images (`DomainData.test`
is None). VisDA-2017 and the digit datasets ship their own splits.

``data.name: folder`` is the user's own data (`tada.data.folder`); ``synthetic_to_handwritten`` is generated in
memory (`tada.data.task`).
"""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tada.data.download import Archive
from tada.data.samples import IMAGE_SUFFIXES, DomainData, Sample
from tada.io import read_text


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    archives: Callable[[str], tuple[Archive, ...]]  # the archives one domain needs
    read: Callable[[dict[str, Path], str, tuple[str, ...]], DomainData]  # extracted dirs by archive name -> data

    def check_domain(self, key: str, domain: str) -> None:
        if domain not in self.domains:
            raise ValueError(f"{key}: {domain!r} is not a domain of {self.name} (domains: {', '.join(self.domains)})")


def _image_folder(root: Path, classes: Sequence[str], what: str) -> tuple[Sample, ...]:
    """``root/<class>/<image>`` for every class (a class folder may be missing: validation reports it)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: expected the directory {root} in the extracted release")
    samples = []
    for label in classes:
        folder = root / label
        if folder.is_dir():
            samples += [Sample(label, path=p, root=root, origin=what) for p in sorted(folder.iterdir())
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return tuple(samples)


def _list_file(root: Path, listing: Path, classes: Sequence[str], what: str) -> tuple[Sample, ...]:
    """``<relative path> <class index>`` per line (Caffe-style image lists), paths relative to ``root``."""
    if not listing.is_file():
        raise FileNotFoundError(f"{what}: expected the image list {listing} in the extracted release")
    samples = []
    for number, line in enumerate(read_text(listing).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            index = int(parts[-1])
            label = classes[index]
        except (ValueError, IndexError):
            raise ValueError(f"{listing}, line {number}: expected '<path> <class index 0..{len(classes) - 1}>', "
                             f"got {line!r}") from None
        samples.append(Sample(label, path=root / " ".join(parts[:-1]), root=root, origin=f"{listing}, line {number}"))
    return tuple(samples)


# --- Office-31 (Saenko et al., 2010) ------------------------------------------------------------------------------
# Home page (where to get the archive by hand): https://faculty.cc.gatech.edu/~judy/domainadapt/

OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray", "mobile_phone",
    "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
)
OFFICE31_ARCHIVE = Archive(
    filename="domain_adaptation_images.tar.gz",
    urls=("https://drive.usercontent.google.com/download?id=0B4IapRTv9pJ1WGZVd1VDMmhwdlE&export=download&confirm=t",),
    sha256=None,
)


def _read_office31(dirs: dict[str, Path], domain: str, classes: tuple[str, ...]) -> DomainData:
    root = dirs[OFFICE31_ARCHIVE.filename]
    return DomainData(_image_folder(root / domain / "images", classes, f"office31 {domain}"))


# --- Office-Home (Venkateswara et al., 2017) ------------------------------------------------------------------------
# Home page (where to get the archive by hand): https://www.hemanthdv.org/officeHomeDataset.html

OFFICE_HOME_CLASSES = (
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar", "Candles",
    "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser", "Exit_Sign", "Fan",
    "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard",
    "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan",
    "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin", "Radio", "Refrigerator", "Ruler",
    "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table", "Telephone",
    "ToothBrush", "Toys", "Trash_Can", "Webcam",
)
OFFICE_HOME_ARCHIVE = Archive(
    filename="OfficeHomeDataset_10072016.zip",
    urls=("https://drive.usercontent.google.com/download?id=0B81rNlvomiwed0V1YUxQdC1uOTg&export=download&confirm=t",),
    sha256=None,
)
OFFICE_HOME_DIRS = {"Art": "Art", "Clipart": "Clipart", "Product": "Product", "Real_World": "Real World"}


def _read_office_home(dirs: dict[str, Path], domain: str, classes: tuple[str, ...]) -> DomainData:
    root = dirs[OFFICE_HOME_ARCHIVE.filename] / "OfficeHomeDataset_10072016" / OFFICE_HOME_DIRS[domain]
    return DomainData(_image_folder(root, classes, f"office_home {domain}"))


# --- ImageCLEF-DA (Long et al., 2017) -------------------------------------------------------------------------------
# Home page (where to get the archive by hand): https://www.imageclef.org/2014/adaptation

IMAGE_CLEF_CLASSES = ("aeroplane", "bike", "bird", "boat", "bottle", "bus", "car", "dog", "horse", "monitor",
                      "motorbike", "people")  # in the index order of the release's list files
IMAGE_CLEF_ARCHIVE = Archive(
    filename="image_CLEF.zip",
    urls=("https://drive.usercontent.google.com/download?id=0B9kJH0-rJ2uRS3JILThaQXJhQlk&export=download&confirm=t",),
    sha256=None,
)


def _read_image_clef(dirs: dict[str, Path], domain: str, classes: tuple[str, ...]) -> DomainData:
    root = dirs[IMAGE_CLEF_ARCHIVE.filename] / "image_CLEF"
    return DomainData(_list_file(root, root / "list" / f"{domain}List.txt", classes, f"image_clef {domain}"))


# --- VisDA-2017 classification (Peng et al., 2017) ------------------------------------------------------------------
# Home page (where to get the archive by hand): https://ai.bu.edu/visda-2017/

VISDA_CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
                 "skateboard", "train", "truck")
VISDA_ARCHIVES = {
    "synthetic": Archive(filename="train.tar", urls=("http://csr.bu.edu/ftp/visda17/clf/train.tar",), sha256=None),
    "real": Archive(filename="validation.tar", urls=("http://csr.bu.edu/ftp/visda17/clf/validation.tar",),
                    sha256=None),
}
VISDA_DIRS = {"synthetic": "train", "real": "validation"}


def _read_visda(dirs: dict[str, Path], domain: str, classes: tuple[str, ...]) -> DomainData:
    root = dirs[VISDA_ARCHIVES[domain].filename] / VISDA_DIRS[domain]
    return DomainData(_list_file(root, root / "image_list.txt", classes, f"visda2017 {domain}"))


# --- Digits: MNIST, USPS, SVHN, MNIST-M -------------------------------------------------------------------------------

DIGIT_CLASSES = tuple("0123456789")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DIGIT_ARCHIVES = {
    "mnist": tuple(Archive(filename=name, urls=(MNIST_URL + name,), sha256=None, md5=md5, extract=False)
                   for name, md5 in (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                                     ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                                     ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                                     ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
    "usps": tuple(Archive(filename=name, urls=("https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
                                               + name,), sha256=None, md5=md5, extract=False)
                  for name, md5 in (("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197"),
                                    ("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118"))),
    "svhn": tuple(Archive(filename=name, urls=("http://ufldl.stanford.edu/housenumbers/" + name,), sha256=None,
                          md5=md5, extract=False)
                  for name, md5 in (("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                                    ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"))),
    "mnist_m": (Archive(filename="mnist_m.tar.gz", urls=(
        "https://drive.usercontent.google.com/download?id=0B_tExHiYS-0veklUZHFYT19KYjg&export=download&confirm=t",),
        sha256=None),),
}


def _idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {array.size} values")
    return array.reshape(shape)


def _libsvm_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """USPS as LIBSVM ships it: ``label i:v ...``, labels 1..10 for digits 0..9, 256 values in [-1, 1]."""
    images, labels = [], []
    with bz2.open(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            pixels = np.zeros(256, dtype=np.float32)
            try:
                for item in parts[1:]:
                    index, value = item.split(":")
                    pixels[int(index) - 1] = float(value)
                labels.append(int(float(parts[0])) - 1)
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {number}: not a LIBSVM row of USPS") from None
            images.append(np.round((pixels.reshape(16, 16) + 1) * 127.5).clip(0, 255).astype(np.uint8))
    return np.stack(images), np.array(labels)


def _in_memory(images: np.ndarray, labels: np.ndarray) -> tuple[Sample, ...]:
    return tuple(Sample(DIGIT_CLASSES[int(y)], image=x) for x, y in zip(images, labels, strict=True))


def _read_digits(dirs: dict[str, Path], domain: str, classes: tuple[str, ...]) -> DomainData:
    files = {name: folder / name for name, folder in dirs.items()}  # single files sit in their own folder
    if domain == "mnist":
        splits = [_in_memory(_idx(files[f"{p}-images-idx3-ubyte.gz"]), _idx(files[f"{p}-labels-idx1-ubyte.gz"]))
                  for p in ("train", "t10k")]
        return DomainData(*splits)
    if domain == "usps":
        return DomainData(*(_in_memory(*_libsvm_usps(files[name])) for name in ("usps.bz2", "usps.t.bz2")))
    if domain == "svhn":
        from scipy.io import loadmat

        splits = []
        for name in ("train_32x32.mat", "test_32x32.mat"):
            mat = loadmat(files[name])
            images = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2)))  # (32, 32, 3, N) -> (N, 32, 32, 3)
            splits.append(_in_memory(images, mat["y"].reshape(-1) % 10))  # SVHN labels "0" as 10
        return DomainData(*splits)
    root = dirs["mnist_m.tar.gz"] / "mnist_m"
    splits = []
    for split in ("train", "test"):
        listing = root / f"mnist_m_{split}_labels.txt"
        samples = []
        for number, line in enumerate(read_text(listing).splitlines(), start=1):
            if line.strip():
                name, label = line.split()
                samples.append(Sample(DIGIT_CLASSES[int(label)], path=root / f"mnist_m_{split}" / name, root=root,
                                      origin=f"{listing}, line {number}"))
        splits.append(tuple(samples))
    return DomainData(*splits)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (
        DatasetSpec(name="office31", domains=("amazon", "dslr", "webcam"), classes=OFFICE31_CLASSES,
                    archives=lambda domain: (OFFICE31_ARCHIVE,), read=_read_office31),
        DatasetSpec(name="office_home", domains=tuple(OFFICE_HOME_DIRS), classes=OFFICE_HOME_CLASSES,
                    archives=lambda domain: (OFFICE_HOME_ARCHIVE,), read=_read_office_home),
        DatasetSpec(name="image_clef", domains=("b", "c", "i", "p"), classes=IMAGE_CLEF_CLASSES,
                    archives=lambda domain: (IMAGE_CLEF_ARCHIVE,), read=_read_image_clef),
        DatasetSpec(name="visda2017", domains=("synthetic", "real"), classes=VISDA_CLASSES,
                    archives=lambda domain: (VISDA_ARCHIVES[domain],), read=_read_visda),
        DatasetSpec(name="digits", domains=("mnist", "usps", "svhn", "mnist_m"), classes=DIGIT_CLASSES,
                    archives=lambda domain: DIGIT_ARCHIVES[domain], read=_read_digits),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"data.name: no benchmark named {name!r} (benchmarks: {', '.join(DATASETS)})")
    return DATASETS[name]
