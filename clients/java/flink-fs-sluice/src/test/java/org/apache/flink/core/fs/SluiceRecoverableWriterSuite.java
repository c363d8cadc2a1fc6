package org.apache.flink.core.fs;

import org.junit.jupiter.api.Disabled;
import org.junit.jupiter.api.Test;

/**
 * Flink's own {@link AbstractRecoverableWriterTest} for the sluice plugin; one subclass per scheme.
 * (In Flink's package, so that the four cases that cannot pass can be named: they are package
 * private there.)
 *
 * <p>Those four list the directory in the middle of a file and expect to see its in-progress file
 * ({@code .part-0.inprogress.*}) and read its bytes through the file system. sluice hides staging
 * from every namespace call and refuses to read it by name, so that uncommitted bytes are never
 * visible (README, Hostile input); the listing finds nothing. What they go on to check, the bytes
 * committed after a recovery from each persist point, {@code dev.sluice.flink.RecoveryPointsTest}
 * checks through the same plugin.
 */
public abstract class SluiceRecoverableWriterSuite extends AbstractRecoverableWriterTest {
  private static final String HIDDEN =
      "lists and reads the in-progress file by name, which sluice hides and refuses; the bytes committed"
          + " after the recovery are checked by dev.sluice.flink.RecoveryPointsTest";

  @Override
  @Test
  @Disabled(HIDDEN)
  void testRecoverWithEmptyState() {}

  @Override
  @Test
  @Disabled(HIDDEN)
  void testRecoverWithState() {}

  @Override
  @Test
  @Disabled(HIDDEN)
  void testRecoverFromIntermWithoutAdditionalState() {}

  @Override
  @Test
  @Disabled(HIDDEN)
  void testRecoverAfterMultiplePersistsState() {}
}
