"""The layout value: a case's {"tp", "dp"} dict read in one place."""

from infercost.bench.layout import Layout


def test_a_layout_reads_the_case_dict_with_missing_axes_as_one():
    assert Layout.of(None) == Layout(1, 1) and Layout.of(None).devices == 1
    assert Layout.of({"tp": 4}) == Layout(4, 1)
    assert Layout.of({"tp": 4, "dp": 2}).devices == 8 and str(Layout.of({"tp": 4, "dp": 2})) == "tp=4,dp=2"
    assert Layout.of({"dp": 3}).as_dict() == {"tp": 1, "dp": 3}
    assert Layout.of(Layout(2, 2)) == Layout(2, 2)
