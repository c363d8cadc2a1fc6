package dev.sluice.client;

/**
 * CRC32C arithmetic that {@link java.util.zip.CRC32C} lacks: the CRC of two byte runs joined, from
 * their CRCs and the second's length (by the GF(2) operator of appending zero bytes, squared up to
 * the length's bits). A recovered stream's running CRC32C is the prefix's, joined with the CRC32C
 * of what it wrote since.
 */
final class Crc {
  /** CRC32C's polynomial, bit-reversed. */
  private static final int POLY = 0x82F63B78;

  private Crc() {}

  /** The CRC32C of A followed by B, given crc(A), crc(B) and B's length in bytes. */
  static int combine(int crcA, int crcB, long lengthB) {
    if (lengthB <= 0) {
      return crcA;
    }
    int[] even = new int[32];
    int[] odd = new int[32];
    // The operator for one zero bit.
    odd[0] = POLY;
    int row = 1;
    for (int n = 1; n < 32; n++) {
      odd[n] = row;
      row <<= 1;
    }
    square(even, odd); // two zero bits
    square(odd, even); // four zero bits
    int crc = crcA;
    long length = lengthB;
    while (true) {
      square(even, odd); // one zero byte, then 4, 16, ...
      if ((length & 1) != 0) {
        crc = times(even, crc);
      }
      length >>>= 1;
      if (length == 0) {
        break;
      }
      square(odd, even); // 2 zero bytes, then 8, 32, ...
      if ((length & 1) != 0) {
        crc = times(odd, crc);
      }
      length >>>= 1;
      if (length == 0) {
        break;
      }
    }
    return crc ^ crcB;
  }

  private static int times(int[] matrix, int vector) {
    int sum = 0;
    for (int i = 0; vector != 0; i++, vector >>>= 1) {
      if ((vector & 1) != 0) {
        sum ^= matrix[i];
      }
    }
    return sum;
  }

  private static void square(int[] result, int[] matrix) {
    for (int n = 0; n < 32; n++) {
      result[n] = times(matrix, matrix[n]);
    }
  }
}
