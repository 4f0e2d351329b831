build-san/src/prep_main.o: src/prep_main.c datasets/convert.h \
 datasets/dataset.h datasets/synth.h
datasets/convert.h:
datasets/dataset.h:
datasets/synth.h:
