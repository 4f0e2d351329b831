build-san/src/models/init.o: src/models/init.c src/models/init.h \
 src/model.h src/config.h kernels/kernels.h
src/models/init.h:
src/model.h:
src/config.h:
kernels/kernels.h:
