"""A bibliography whose entries are labelled as the text cites them: "Frankle and Carbin 2019",
"Tanaka et al. 2020", "Zhao, poster". Sphinx loads this module (``_config.yml``,
``local_extensions``); it registers the pybtex style ``author_year`` that ``bibtex_default_style``
names: pybtex's ``plain`` style (sorted by author, then year) with these labels."""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    """One author: "Surname year"; two: "A and B year"; more: "A et al. year"."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            names = [_surname(p) for p in entry.persons.get("author", [])]
            who = (names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2
                   else f"{names[0]} et al.")
            when = entry.fields.get("year", "")
            yield f"{who}, {when}" if not when.isdigit() else f"{who} {when}"


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
