import pytest

from pipeline import lfw


def write(tmp_path, text, name="pairs.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pairs_three_and_four_field_lines_with_one_based_numbers(tmp_path):
    path = write(tmp_path, "1\nAaron_Peirsol\t1\t2\nAJ_Cook\t1\tMarsha_Thomason\t3\n")
    same, diff = lfw.parse_pairs(path)
    assert same == lfw.Pair("Aaron_Peirsol", 1, "Aaron_Peirsol", 2) and same.same
    assert diff == lfw.Pair("AJ_Cook", 1, "Marsha_Thomason", 3) and not diff.same
    assert lfw.image_relpath("AJ_Cook", 1) == "lfw2/AJ_Cook/AJ_Cook_0001.jpg"


def test_view2_header_with_folds(tmp_path):
    path = write(tmp_path, "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tD\t2\n")
    assert len(lfw.parse_pairs(path)) == 4


@pytest.mark.parametrize("text, message", [
    ("1\nA\t1\t2\nA\t1\tB\t1\t7\n", r"pairs.txt:3: expected 3 fields \(same\) or 4 fields"),
    ("1\nA\tx\t2\nA\t1\tB\t1\n", r"pairs.txt:2: image number 'x' is not an integer"),
    ("1\nA\t0\t2\nA\t1\tB\t1\n", r"pairs.txt:2: image number 0 must be >= 1"),
    ("2\nA\t1\t2\nA\t1\tB\t1\n", r"pairs.txt:1: header announces 4 pairs"),
    ("1\nA\t1\tB\t1\nA\t1\t2\n", r"pairs.txt:2: expected a same-person pair"),
    ("", r"pairs.txt:1: empty file"),
])
def test_bad_pairs_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(lfw.ProtocolError, match=message):
        lfw.parse_pairs(write(tmp_path, text))


def test_people_file(tmp_path):
    assert lfw.parse_people(write(tmp_path, "2\nA\t3\nB\t1\n", "people.txt")) == {"A": 3, "B": 1}


@pytest.mark.parametrize("text, message", [
    ("3\nA\t3\nB\t1\n", r"people.txt:1: header announces 3 people, file has 2"),
    ("2\nA\t3\nA\t1\n", r"people.txt:3: A is listed twice"),
    ("1\nA\n", r"people.txt:2: expected 'name<TAB>count'"),
    ("1\nA\tthree\n", r"people.txt:2: image count 'three' is not an integer"),
])
def test_bad_people_files(tmp_path, text, message):
    with pytest.raises(lfw.ProtocolError, match=message):
        lfw.parse_people(write(tmp_path, text, "people.txt"))
