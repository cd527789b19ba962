from morphgen.report.pages import write_table_page
from morphgen.workflow import logged

with logged(snakemake) as log:
    for page, title in snakemake.params.titles.items():
        write_table_page(snakemake.input[page], snakemake.output[page], title)
        log.info("%s -> %s", snakemake.input[page], snakemake.output[page])
